"""The comparative bench's figure, ``bench.png``: the measures per method beside the seconds per request."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from bench.results import BenchRow
from lifecycle.report import figure_png

MEASURES = [("RA", "ra"), ("FA", "fa"), ("spill", "spill"), ("relapse", "relapse"), ("MIA gap", "mia_gap")]
WITH_CHANCE = ("ra", "fa")  # the measures that are accuracies, where guessing sets a floor


def method_colours(methods: Sequence[str]) -> dict[str, tuple]:
    """One colour per method, the same in every panel."""
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(methods) <= 10 else "tab20"]
    return {m: palette(i % palette.N) for i, m in enumerate(methods)}


def plot(rows: Sequence[BenchRow], title: str) -> bytes:
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    colour = method_colours([r.method for r in rows])
    fig = Figure(figsize=(13, 4.8), dpi=100)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1.4]})

    width = 0.8 / len(rows)
    x = np.arange(len(MEASURES))
    top = 1.0
    for j, r in enumerate(rows):
        values = [getattr(r, key) for _, key in MEASURES]
        heights = [0 if math.isnan(v) else v for v in values]
        top = max(top, *heights)
        left.bar(x + j * width, heights, width, label=r.method, color=colour[r.method])
        if not math.isnan(r.chance):
            for k, (_, key) in enumerate(MEASURES):
                if key in WITH_CHANCE:
                    centre = x[k] + j * width
                    left.hlines(r.chance, centre - width / 2, centre + width / 2, colors="black", linewidth=2)
    left.set_xticks(x + width * (len(rows) - 1) / 2, [name for name, _ in MEASURES])
    left.set_ylim(0, 1.05 * top)
    left.set_ylabel("accuracy, |Δ accuracy| or AUC gap")
    left.set_title(title)
    handles, _ = left.get_legend_handles_labels()
    handles.append(Line2D([], [], color="black", linewidth=2, label="chance (RA, FA)"))
    left.legend(handles=handles, fontsize=8, ncol=2)
    left.grid(axis="y", alpha=0.3)

    x = np.arange(len(rows))
    for offset, key, hatch in ((-0.2, "learn_s", None), (0.2, "forget_s", "//")):
        seconds = [getattr(r, key) for r in rows]
        right.bar(x + offset, [0 if math.isnan(s) else max(s, 1e-4) for s in seconds], 0.4, hatch=hatch,
                  color=[colour[r.method] for r in rows], edgecolor="white" if hatch else None)
    right.set_yscale("log")
    right.set_ylabel("seconds (log scale)")
    right.set_xticks(x, [r.method for r in rows], rotation=45, ha="right", fontsize=8)
    right.set_title("seconds per request")
    right.legend(handles=[Patch(facecolor="grey", label="learn"),
                          Patch(facecolor="grey", hatch="//", edgecolor="white", label="forget")], fontsize=8)
    fig.tight_layout()
    return figure_png(fig)
