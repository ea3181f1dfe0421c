"""Walk-forward charts: the out-of-sample equity of ML on and ML off, the fold boundaries, and
which folds had a model for which symbol.

Why: a walk-forward total can hide that the filter only ever ran in one fold (the others had too
little history to train) or that one fold made all the difference. Seeing the folds beside the
equity makes both visible at a glance. ``walk_forward.png`` and the offline ``walk_forward.html``.

Both are drawn from a :class:`WalkForwardChart`: plain, already decimated arrays, so that a chart
worker process receives it as a job (``chart_jobs``) like the equity charts, and this process
never imports the plotting libraries (issue 13).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from perpbot.backtest.charts import (
    UNPROVEN,
    Series,
    decimated_series,
    dt64,
    html_page,
    new_figure,
    png_bytes,
    stacked_axes,
)

if TYPE_CHECKING:
    from perpbot.backtest.walk_forward import WalkForwardResult

MODE_STYLE = {"ml_on": ("ML on", "tab:blue"), "ml_off": ("ML off", "tab:orange")}
TRAINED, UNTRAINED = "tab:green", "lightgrey"

FoldCell = tuple[int, int, int, dict[str, bool]]
"""One fold: (index, test start ms, test end ms, symbol → had a model)."""


@dataclass(frozen=True, slots=True)
class WalkForwardChart:
    """What both walk-forward charts draw: per mode the decimated out-of-sample equity, the folds."""

    title: str
    symbols: tuple[str, ...]
    curves: dict[str, Series]  # mode (``MODE_STYLE`` key) → decimated portfolio equity
    folds: tuple[FoldCell, ...]


def fold_summary(result: WalkForwardResult) -> list[FoldCell]:
    """Per fold: (index, test start ms, test end ms, symbol → had a model)."""
    return [
        (f.index, f.test_start_ms, f.test_end_ms, {s: m.status == "trained" for s, m in f.models.items()})
        for f in result.folds
    ]


def walk_forward_chart(result: WalkForwardResult, title: str) -> WalkForwardChart:
    curves = {}
    for mode in MODE_STYLE:
        curve = result.metrics[mode].portfolio_curve
        curves[mode] = decimated_series(curve.time_ms, curve.equity)
    return WalkForwardChart(title, tuple(result.symbols), curves, tuple(fold_summary(result)))


def walk_forward_png(chart: WalkForwardChart) -> bytes:
    symbols, title = list(chart.symbols), chart.title
    fig = new_figure(12, 6 + 0.3 * len(symbols))
    ax_eq, ax_models = fig.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": [4, max(1.0, 0.35 * len(symbols))]}
    )
    for mode, (label, colour) in MODE_STYLE.items():
        curve = chart.curves[mode]
        if curve.time_ms.size:
            ax_eq.plot(dt64(curve.time_ms), curve.values, color=colour, lw=1.0, label=label)
    for k, (index, a, b, had) in enumerate(chart.folds):
        x0, x1 = dt64([a, b])
        ax_eq.axvspan(x0, x1, color="grey", alpha=0.08 if k % 2 else 0.0)
        ax_eq.axvline(x0, color="grey", ls=":", lw=0.8)
        ax_eq.annotate(
            f"fold {index}: {sum(had.values())}/{len(had)} models",
            (x0, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -3),
            textcoords="offset points",
            va="top",
            fontsize=8,
            color="dimgrey",
        )
        for row, sym in enumerate(symbols):
            ax_models.broken_barh(
                [(x0, x1 - x0)],
                (row - 0.4, 0.8),
                color=TRAINED if had.get(sym) else UNTRAINED,
                edgecolor="white",
            )
    ax_models.set_yticks(range(len(symbols)), symbols, fontsize=8)
    ax_models.set_ylim(-0.6, len(symbols) - 0.4)
    ax_models.invert_yaxis()
    ax_models.set_ylabel("model", fontsize=8)
    ax_eq.set_title(
        f"{title}\nfolds: green = model trained for the fold, grey = no model (traded unfiltered)"
    )
    ax_eq.set_ylabel("out-of-sample equity (USDT)")
    ax_eq.legend(loc="upper right", fontsize=8)
    ax_eq.grid(alpha=0.3)
    for label in ax_models.get_xticklabels():
        label.set_rotation(30)
        label.set_horizontalalignment("right")
    fig.subplots_adjust(left=0.09, right=0.98, top=0.9, bottom=0.14, hspace=0.08)
    fig.text(0.01, 0.005, UNPROVEN, fontsize=7, color="grey")
    return png_bytes(fig)


def walk_forward_html(chart: WalkForwardChart) -> bytes:
    symbols, title = list(chart.symbols), chart.title
    data: list[dict[str, Any]] = []
    for mode, (label, colour) in MODE_STYLE.items():
        curve = chart.curves[mode]
        x, y = dt64(curve.time_ms), curve.values
        colour = colour.removeprefix("tab:")
        data.append(
            {"type": "scatter", "mode": "lines", "name": label, "x": x, "y": y, "line": {"color": colour}}
        )
    shapes: list[dict[str, Any]] = []
    folds = chart.folds
    for _, a, b, had in folds:
        x0, x1 = (str(v) for v in dt64([a, b]))
        shapes.append(
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": x0,
                "x1": x0,
                "y0": 0,
                "y1": 1,
                "line": {"dash": "dot", "width": 1, "color": "grey"},
            }
        )
        for row, sym in enumerate(symbols):
            shapes.append(
                {
                    "type": "rect",
                    "xref": "x",
                    "yref": "y2",
                    "x0": x0,
                    "x1": x1,
                    "y0": row - 0.4,
                    "y1": row + 0.4,
                    "fillcolor": "green" if had.get(sym) else "lightgrey",
                    "line": {"color": "white", "width": 1},
                }
            )
    # Invisible points carry the hover text of each fold × symbol cell.
    data.append(
        {
            "type": "scatter",
            "mode": "markers",
            "name": "models",
            "showlegend": False,
            "yaxis": "y2",
            "x": [str(dt64([(a + b) // 2])[0]) for _, a, b, had in folds for _ in symbols],
            "y": [row for _ in folds for row in range(len(symbols))],
            "text": [
                f"fold {i} {s}: {'model trained' if had.get(s) else 'no model (unfiltered)'}"
                for i, _, _, had in folds
                for s in symbols
            ],
            "hoverinfo": "text",
            "marker": {"opacity": 0},
        }
    )
    layout = stacked_axes(
        [0.75, 0.25], ["out-of-sample equity (USDT)", "model per fold (green = trained)"], 0.08
    )
    layout["yaxis2"].update(tickvals=list(range(len(symbols))), ticktext=symbols, autorange="reversed")
    layout["annotations"] += [
        {
            "x": str(dt64([a])[0]),
            "y": 1.0,
            "xref": "x",
            "yref": "paper",
            "text": f"fold {i}: {sum(had.values())}/{len(had)} models",
            "showarrow": False,
            "xanchor": "left",
            "yanchor": "top",
            "font": {"size": 10, "color": "dimgrey"},
        }
        for i, a, _, had in folds
    ]
    layout.update(
        shapes=shapes, title={"text": f"{title}<br><sup>{UNPROVEN}</sup>"}, height=700, hovermode="closest"
    )
    return html_page(data, layout, "walk-forward")
