"""The charts' PNG encoder: standard files, the very pixels matplotlib drew."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pytest
from PIL import Image

from perpbot.backtest.charts import new_figure, png_bytes
from perpbot.backtest.png_file import SIGNATURE, encode_png, up_filtered


def _decoded(png: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(png))
    im.load()  # Pillow checks every chunk's CRC and inflates the data here
    return im


def test_any_rgba_image_comes_back_exactly_with_its_text_and_dpi() -> None:
    rgba = np.random.default_rng(3).integers(0, 256, size=(37, 53, 4), dtype=np.uint8)
    png = encode_png(rgba, 100.0, {"Software": "perpbot test"})
    im = _decoded(png)
    assert png.startswith(SIGNATURE)
    assert im.mode == "RGBA" and im.size == (53, 37)
    assert np.array_equal(np.asarray(im), rgba)
    assert im.info["Software"] == "perpbot test"
    assert im.info["dpi"] == pytest.approx((100.0, 100.0), abs=1e-3)


def test_rows_are_stored_up_filtered() -> None:
    rgba = np.array([[[10, 20, 30, 255]], [[5, 25, 30, 0]]], dtype=np.uint8)  # two rows, one pixel
    rows = up_filtered(rgba)
    assert rows.tolist() == [[2, 10, 20, 30, 255], [2, 251, 5, 0, 1]]  # 5 - 10 wraps to 251


def test_not_rgba_is_refused() -> None:
    with pytest.raises(ValueError, match="height x width x 4"):
        encode_png(np.zeros((4, 4, 3), dtype=np.uint8), 100.0, {})
    with pytest.raises(ValueError, match="height x width x 4"):
        encode_png(np.zeros((4, 4, 4), dtype=np.float64), 100.0, {})


def _figure():  # type: ignore[no-untyped-def]
    fig = new_figure(4, 3)
    ax = fig.subplots()
    ax.plot(np.arange(50), np.sin(np.arange(50) / 5.0), lw=1.2)
    ax.fill_between(np.arange(50), 0.0, np.cos(np.arange(50) / 7.0), alpha=0.4)
    ax.set_title("a chart")
    return fig


def _pillow_png(fig) -> bytes:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


@pytest.mark.parametrize("savefig_dpi", ["figure", 150])
def test_a_chart_has_the_pixels_and_metadata_of_matplotlibs_own_png(savefig_dpi: object) -> None:
    with matplotlib.rc_context({"savefig.dpi": savefig_dpi}):
        ours, theirs = _decoded(png_bytes(_figure())), _decoded(_pillow_png(_figure()))
    assert ours.size == theirs.size == ((400, 300) if savefig_dpi == "figure" else (600, 450))
    assert ours.mode == theirs.mode == "RGBA"
    assert np.array_equal(np.asarray(ours), np.asarray(theirs))
    assert ours.info["Software"] == theirs.info["Software"]
    assert ours.info["dpi"] == pytest.approx(theirs.info["dpi"])


def test_zlib_level_only_trades_size_for_time() -> None:
    rgba = np.full((64, 64, 4), 255, dtype=np.uint8)
    rgba[10:20, :, :3] = 0
    fast, small = encode_png(rgba, 100.0, {}, level=1), encode_png(rgba, 100.0, {}, level=9)
    assert np.array_equal(np.asarray(_decoded(fast)), np.asarray(_decoded(small)))
    assert len(small) <= len(fast)
