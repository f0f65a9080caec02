"""Accuracy curves with matplotlib: a run's ``accuracy.png`` and the comparison of runs (tools/compare_runs.py).

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot, no global state,
no display needed). ``save`` writes PNG or SVG by the file's extension; ``to_image`` gives a PIL image
for callers that compose or save images themselves. Accuracies are fractions in [0, 1], drawn in %.
"""

from __future__ import annotations

import io
import os
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
# matplotlib's default cycle ("tab10"), by name: the same colour means the same thing in every figure
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
           "tab:olive", "tab:cyan")

Series = tuple[str, Sequence[float], Sequence[float]]  # (label, xs, accuracies in [0, 1])


def _percent_axis(ax, xlabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_xlim(left=0)
    ax.grid(True, color="0.9")


def curves_figure(series: Sequence[Series], xlabel: str, title: str = "", size: tuple[int, int] = (720, 420),
                  colours: Sequence[str] | None = None) -> Figure:
    """One axes: a line with markers per ``(label, xs, ys)``, ys in [0, 1] drawn in %, and a legend."""
    fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = colours or COLOURS
    for i, (label, xs, ys) in enumerate(series):
        ax.plot(list(xs), [100 * y for y in ys], marker="o", markersize=3, linewidth=1.5,
                color=colours[i % len(colours)], label=label)
    _percent_axis(ax, xlabel)
    if series:
        ax.legend(loc="lower right", fontsize="small")
    if title:
        ax.set_title(title)
    return fig


def comparison_figure(groups: Sequence[tuple[str, Sequence[dict]]], title: str = "",
                      panels: Sequence[tuple[str, str]] = (("round", "round"), ("wall_time_s", "seconds")),
                      size: tuple[int, int] = (1100, 420)) -> Figure:
    """Accuracy of groups of runs (each ``(label, [evaluations of run 1, of run 2, ...])``, an evaluation a
    ``metrics.jsonl`` record with ``accuracy`` and the panels' x keys) against each x of ``panels``
    (``(key, axis label)``), one axes per panel side by side. A group's runs (seeds) share a colour and
    one legend entry; the legend names how many runs it holds."""
    fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, xlabel) in zip(axes, panels):
        for i, (label, runs) in enumerate(groups):
            colour = COLOURS[i % len(COLOURS)]
            for j, evals in enumerate(runs):
                points = [(r[key], r["accuracy"]) for r in evals if key in r]
                n = f" ({len(runs)} runs)" if len(runs) > 1 else ""
                ax.plot([x for x, _ in points], [100 * y for _, y in points], color=colour, linewidth=1.2,
                        marker="o", markersize=2.5, alpha=0.85, label=f"{label}{n}" if j == 0 else None)
        _percent_axis(ax, xlabel)
        ax.legend(loc="lower right", fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def save(fig: Figure, path: str) -> str:
    """Write ``fig`` as PNG or SVG (by ``path``'s extension; anything else is refused)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".png", ".svg"):
        raise ValueError(f"Cannot write a figure as {path!r}: give a .png or .svg file name.")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, format=ext[1:], dpi=DPI)
    return path


def to_image(fig: Figure):
    """The figure rendered as a PIL RGB image of its pixel size."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    buf.seek(0)
    return Image.open(buf).convert("RGB")
