"""The canonical LightGBM model: the trained booster rewritten so that its ONNX export is exact.

Why the booster is rewritten before anyone uses it
--------------------------------------------------
The server runs the model through onnxruntime, and the ONNX probabilities must equal LightGBM's
within 1e-5 for *every* input, not only on the rows a test happened to try. A plain
``onnxmltools`` export does not give that: the converter stores tree thresholds and leaf values
as float32 attributes and only accepts a float32 input, so a value lying between a double
threshold and its float32 rounding takes the other branch (measured: |Δp| up to 0.016 on random
data). Three divergence sources exist, and each is removed *by construction*:

1. **Split thresholds.** After training, every threshold ``t`` is replaced by the largest float32
   not above it, ``t' = floor32(t)``. ``t'`` is exactly representable in float32, so the
   converter's float32 attribute holds it without loss; the exporter then re-declares the
   thresholds as a float64 tensor (``nodes_values_as_tensor``, ai.onnx.ml opset 3) and the graph
   input as float64. LightGBM (``x <= t'`` in double) and onnxruntime (``x <= t'`` in double)
   compare the same double against the same double: no input can take different branches.
   Representability is what makes the export exact; rounding *down* (rather than to nearest)
   additionally keeps every float32 input on the side of the split it had in training
   (``x ≤ t ⟺ x ≤ floor32(t)`` for float32 x), and moves a boundary by less than one float32 ulp
   for other inputs. The rewritten booster *is* the model — metrics, the native text file and the
   ONNX file all come from it.
2. **Missing values.** LightGBM routes NaN by a per-node "missing type": ``NaN`` (default
   direction) for features that had NaN in training, ``None`` otherwise — and ``None`` means
   "treat NaN as 0.0". The converter infers the ``None`` case from ``default_left`` and the
   threshold sign, which is only right for left-defaulting nodes. The rewrite
   turns every ``None`` node into an explicit ``NaN`` node whose default direction is where 0.0
   would go (``0 <= t'``), which LightGBM evaluates identically and the converter maps one-to-one
   onto ``nodes_missing_value_tracks_true``. ``zero_as_missing`` and categorical splits are
   refused (the rewrite could not guarantee them and the 26 features never need them).
3. **Leaf values** are rounded to the nearest float32 (lossless through the converter); the
   exported ensemble accumulates in double (float64 class weights), like LightGBM. The only
   float32 step left is the final logistic in onnxruntime: |Δp| ≲ 1e-7.

So NaN means "missing" in both paths, the server passes float64 rows unchanged (the dtype the
exporter declares), and the fidelity test (≤ 1e-5, incl. NaN rows and values placed on the float32
neighbours of every threshold) checks the construction rather than being the construction.

Separate from ``lgbm_model.py`` (fitting, prediction, the ONNX graph) because this is a text
rewrite of LightGBM's model format with its own invariants (idempotent, ``tree_sizes``
recomputed, refusal of what it cannot export), checked on its own by the fidelity tests.
"""

from __future__ import annotations

import math
import re

import numpy as np

from perpbot.errors import ModelError

_MISSING_NONE, _MISSING_ZERO, _MISSING_NAN = 0, 1, 2


def _floor_f32(t: float) -> float:
    """Largest float32 ``≤ t`` (as a Python float): ``x <= t ⟺ x <= floor32(t)`` for float32 x.

    LightGBM writes "NaN versus the rest" splits with a huge threshold (1e300); it becomes the
    largest finite float32, which keeps every real feature value on the same side.
    """
    if math.isnan(t):
        raise ModelError("LightGBM model has a NaN threshold; cannot export")
    with np.errstate(over="ignore"):
        f = np.float32(t)
    if float(f) > t:
        f = np.nextafter(f, np.float32(-np.inf))
    return float(f)


def _fmt(v: float) -> str:
    """Shortest round-trip text of a double (LightGBM parses it back to the same value)."""
    return repr(float(v))


def _canonical_tree(block: str) -> str:
    """Rewrite one ``Tree=…`` block (thresholds, decision types, leaf values)."""
    out: list[str] = []
    thresholds: list[float] | None = None
    for line in block.split("\n"):
        key, sep, value = line.partition("=")
        items = value.split()
        if not sep:
            out.append(line)
        elif key == "threshold":
            thresholds = [_floor_f32(float(v)) for v in items]
            out.append("threshold=" + " ".join(_fmt(v) for v in thresholds))
        elif key == "decision_type":
            if thresholds is None or len(thresholds) != len(items):
                raise ModelError("LightGBM model text: decision_type before/without thresholds")
            new: list[str] = []
            for dt_s, thr in zip(items, thresholds, strict=True):
                dt = int(dt_s)
                if dt & 1:
                    raise ModelError(
                        "LightGBM model has categorical splits; the exporter does not support them"
                    )
                missing = (dt >> 2) & 3
                if missing == _MISSING_ZERO:
                    raise ModelError(
                        "LightGBM model treats zero as missing; train with zero_as_missing=False"
                    )
                if missing == _MISSING_NONE:
                    # LightGBM: NaN -> 0.0, then 0.0 <= t'. Make that an explicit default direction.
                    dt = (dt & ~0b1110) | (_MISSING_NAN << 2) | (2 if thr >= 0.0 else 0)
                new.append(str(dt))
            out.append("decision_type=" + " ".join(new))
        elif key == "leaf_value":
            out.append("leaf_value=" + " ".join(_fmt(float(np.float32(float(v)))) for v in items))
        elif key == "is_linear" and value.strip() not in ("", "0"):
            raise ModelError("LightGBM linear trees are not supported by the exporter")
        else:
            out.append(line)
    return "\n".join(out)


def canonicalize_model_text(text: str) -> str:
    """Rewrite a LightGBM text model so that its ONNX export is exact (module docstring, 1–3).

    Idempotent: thresholds already on float32 values stay, explicit NaN nodes stay. The
    ``tree_sizes`` header (byte length of every tree block, used by LightGBM's parallel loader) is
    recomputed, since the rewritten numbers change the block lengths. Raises ``ModelError`` for
    categorical splits, ``zero_as_missing`` nodes, linear trees or text that is not a model.
    """
    starts = [m.start() for m in re.finditer(r"^Tree=", text, re.M)]
    end = re.search(r"^end of trees", text, re.M)
    if not starts or end is None or not text.startswith("tree"):
        raise ModelError("not a LightGBM text model (no trees)")
    bounds = [*starts, end.start()]
    blocks = [_canonical_tree(text[bounds[i] : bounds[i + 1]]) for i in range(len(starts))]
    header = text[: starts[0]]
    sizes = " ".join(str(len(b.encode("utf-8"))) for b in blocks)
    header, n = re.subn(r"^tree_sizes=.*$", f"tree_sizes={sizes}", header, count=1, flags=re.M)
    if n != 1:
        raise ModelError("LightGBM model text has no tree_sizes header")
    return header + "".join(blocks) + text[end.start() :]
