"""Charts rendered by matplotlib (Agg, no display) to SVG strings that can be inlined in HTML.

Each function returns one ``<svg>`` element without the XML prolog, metadata block or namespace
URLs, so the page holds no external reference. Text stays text (``svg.fonttype = none``), so the
browser draws Chinese labels with its own fonts.
"""

from __future__ import annotations

import html
import io
import re
import warnings
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter

__all__ = ["PALETTE", "figure_to_svg", "svg_bar_chart", "svg_histogram", "svg_line_chart"]

PALETTE = ("#1f6feb", "#e36209", "#2da44e", "#8250df", "#cf222e", "#6e7781")
# Typed as Any because matplotlib types rc keys as a Literal union that a plain dict cannot meet.
_RC: Any = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#d8dee4",
    "grid.linewidth": 0.6,
}
_PROLOG = re.compile(r"^.*?(?=<svg)", re.DOTALL)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)
_NAMESPACES = re.compile(r'\s+xmlns(:\w+)?="[^"]*"')
_SIZE = re.compile(r'\s(width|height)="[\d.]+pt"')


def _thousands(value: float, _position: int) -> str:
    return f"{value:,.0f}"


def figure_to_svg(figure: Figure, salt: str) -> str:
    """Serialise a figure to an inline ``<svg>`` element; ``salt`` keeps element ids unique per chart."""
    buffer = io.StringIO()
    with matplotlib.rc_context({**_RC, "svg.hashsalt": salt}), warnings.catch_warnings():
        # Glyph warnings for CJK text are expected: the text is emitted as text and drawn by the browser.
        warnings.simplefilter("ignore", UserWarning)
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    svg = _PROLOG.sub("", buffer.getvalue(), count=1)
    svg = _METADATA.sub("", svg, count=1)
    svg = _NAMESPACES.sub("", svg)
    svg = _SIZE.sub("", svg, count=2)
    return svg.replace("<svg ", f'<svg class="chart" role="img" aria-label="{html.escape(salt, quote=True)}" ', 1)


def _new_figure(width_in: float = 7.0, height_in: float = 3.0) -> Figure:
    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=(width_in, height_in))
        figure.add_subplot(1, 1, 1)
    return figure


def _finish_axes(figure: Figure, title: str, xlabel: str, ylabel: str, percent: bool, hlines: dict[str, float] | None = None) -> None:
    axes = figure.axes[0]
    for index, (label, level) in enumerate((hlines or {}).items()):
        axes.axhline(level, color=PALETTE[(index + 4) % len(PALETTE)], linestyle="--", linewidth=1.0, label=label)
    # Autoscale first (so reference lines above the data stay in view), then pin the axis at zero.
    axes.autoscale_view()
    axes.set_ylim(bottom=0)
    axes.set_title(title, loc="left", fontsize=10, fontweight="bold")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    if percent:
        axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    elif axes.get_ylim()[1] >= 1000:
        axes.yaxis.set_major_formatter(FuncFormatter(_thousands))
    if axes.get_legend_handles_labels()[0]:
        axes.legend(frameon=True, framealpha=0.9, edgecolor="none", fontsize=8, loc="best")


def svg_line_chart(
    x: Sequence[float],
    series: dict[str, Sequence[float | None]],
    *,
    title: str,
    xlabel: str = "",
    ylabel: str = "",
    hlines: dict[str, float] | None = None,
    vlines: Sequence[float] = (),
    percent: bool = False,
    salt: str = "line",
) -> str:
    """Lines over a shared x axis; ``hlines`` are labelled reference levels, ``vlines`` boundaries."""
    with matplotlib.rc_context(_RC):
        figure = _new_figure()
        axes = figure.axes[0]
        for index, (label, values) in enumerate(series.items()):
            y = [float("nan") if value is None else value for value in values]
            axes.plot(list(x), y, label=label, color=PALETTE[index % len(PALETTE)], linewidth=1.4)
        for position in vlines:
            axes.axvline(position, color="#afb8c1", linestyle=":", linewidth=0.8)
        _finish_axes(figure, title, xlabel, ylabel, percent, hlines)
    return figure_to_svg(figure, salt)


def svg_bar_chart(
    categories: Sequence[str],
    series: dict[str, Sequence[float | None]],
    *,
    title: str,
    xlabel: str = "",
    ylabel: str = "",
    hlines: dict[str, float] | None = None,
    percent: bool = False,
    salt: str = "bars",
) -> str:
    """Grouped bars, one group per category and one bar per series."""
    with matplotlib.rc_context(_RC):
        figure = _new_figure()
        axes = figure.axes[0]
        count = max(len(series), 1)
        width = 0.8 / count
        positions = list(range(len(categories)))
        for index, (label, values) in enumerate(series.items()):
            offsets = [position - 0.4 + width * (index + 0.5) for position in positions]
            heights = [0.0 if value is None else value for value in values]
            axes.bar(offsets, heights, width=width * 0.95, label=label, color=PALETTE[index % len(PALETTE)])
        axes.set_xticks(positions)
        axes.set_xticklabels(list(categories))
        axes.grid(axis="x", visible=False)
        _finish_axes(figure, title, xlabel, ylabel, percent, hlines)
    return figure_to_svg(figure, salt)


def svg_histogram(edges: Sequence[float], counts: Sequence[float], *, title: str, xlabel: str = "", ylabel: str = "", salt: str = "histogram") -> str:
    """Draw a histogram from precomputed bin edges and counts."""
    with matplotlib.rc_context(_RC):
        figure = _new_figure()
        axes = figure.axes[0]
        if counts:
            widths = [right - left for left, right in pairwise(edges)]
            axes.bar(list(edges[:-1]), list(counts), width=widths, align="edge", color=PALETTE[0], edgecolor="white", linewidth=0.4)
        axes.grid(axis="x", visible=False)
        _finish_axes(figure, title, xlabel, ylabel, percent=False)
    return figure_to_svg(figure, salt)
