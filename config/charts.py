"""Charts as server-rendered SVG: stacked bars, lines of several series, a histogram.

No script and no inline style, so the pages keep their Content-Security-Policy: geometry is
given by attributes, colours by classes in static/app.css (``.chart .s-<name>``). Every text
(titles, labels, series names, tooltips) goes through ``escape``, because agent names come
from operators. Each bar and point carries a ``<title>``: the browser shows it as a tooltip.
The SVG has ``role="img"`` and an ``aria-label`` that sums it up; the pages show the same
numbers in tables beside it for those who cannot see the chart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH = 600
HEIGHT = 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 34, 44
LEGEND_ROW = 20
MAX_X_LABELS = 8
EMPTY = "No data in this window."

Formatter = Callable[[float], str]
_CLASS = re.compile(r"[^a-z0-9_-]+")


def plain(value: float) -> str:
    """Whole numbers without a point, others with up to two decimals."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class Series:
    """One named row of values, one per x label; ``None`` is a gap (no value there).

    ``css`` names the colour class (``s-<css>``); ``links`` optionally gives each value a URL.
    """

    name: str
    values: Sequence[float | None]
    css: str = "0"
    links: Sequence[str | None] | None = None


def nice_ticks(top: float, *, count: int = 4) -> list[float]:
    """Round tick values from 0 to at least ``top``: steps of 1, 2, 2.5 or 5 times a power of ten."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(power * m for m in (1, 2, 2.5, 5, 10) if power * m >= raw)
    ticks = [0.0]
    while ticks[-1] < top:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


@dataclass(frozen=True)
class _Frame:
    """The plot area and the y scale of one chart."""

    ticks: list[float]
    count: int
    legend_rows: int

    @property
    def bottom(self) -> float:
        return HEIGHT - BOTTOM - self.legend_rows * LEGEND_ROW

    @property
    def plot_height(self) -> float:
        return self.bottom - TOP

    @property
    def slot(self) -> float:
        return (WIDTH - LEFT - RIGHT) / max(self.count, 1)

    def y(self, value: float) -> float:
        return self.bottom - self.plot_height * value / self.ticks[-1]

    def height_of(self, value: float) -> float:
        return self.plot_height * value / self.ticks[-1]

    def x(self, index: int) -> float:
        return LEFT + self.slot * index


def _css(name: str) -> str:
    return "s-" + (_CLASS.sub("-", name.lower()) or "0")


def _open(title: str, summary: str, *, kind: str, height: float) -> list[str]:
    label = escape(f"{title}. {summary}")
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-{kind}" role="img" aria-label="{label}" '
        f'viewBox="0 0 {WIDTH} {height:g}" width="{WIDTH}" height="{height:g}" preserveAspectRatio="xMinYMin meet">',
        f"<title>{escape(title)}</title>",
        f"<desc>{escape(summary)}</desc>",
        f'<text class="chart-title" x="{LEFT}" y="18">{escape(title)}</text>',
    ]


def _empty(title: str, message: str, *, kind: str) -> SafeString:
    parts = _open(title, message, kind=kind, height=120)
    parts.append(f'<text class="chart-empty" x="{WIDTH / 2:g}" y="70" text-anchor="middle">{escape(message)}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308  (every text above is escaped)


def _axes(frame: _Frame, labels: Sequence[str], fmt: Formatter, *, centred: bool = True) -> list[str]:
    parts = ['<g class="chart-axis">']
    for tick in frame.ticks:
        y = frame.y(tick)
        parts.append(f'<line class="chart-grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(fmt(tick))}</text>')
    parts.append(
        f'<line class="chart-baseline" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{frame.bottom}" y2="{frame.bottom}"/>'
    )
    every = max(1, math.ceil(len(labels) / MAX_X_LABELS))
    for index, label in enumerate(labels):
        if index % every:
            continue
        x = frame.x(index) + (frame.slot / 2 if centred else 0)
        parts.append(f'<text x="{x:.1f}" y="{frame.bottom + 16}" text-anchor="middle">{escape(label)}</text>')
    parts.append("</g>")
    return parts


def _legend(series: Sequence[Series], frame: _Frame) -> list[str]:
    parts = ['<g class="chart-legend">']
    x, y = float(LEFT), frame.bottom + 30
    for item in series:
        width = 24 + 7 * len(item.name)
        if x + width > WIDTH - RIGHT and x > LEFT:
            x, y = float(LEFT), y + LEGEND_ROW
        parts.append(f'<rect class="{_css(item.css)}" x="{x:.1f}" y="{y:.1f}" width="12" height="12"/>')
        parts.append(f'<text x="{x + 16:.1f}" y="{y + 10:.1f}">{escape(item.name)}</text>')
        x += width
    parts.append("</g>")
    return parts


def _legend_rows(series: Sequence[Series]) -> int:
    rows, x = 1, float(LEFT)
    for item in series:
        width = 24 + 7 * len(item.name)
        if x + width > WIDTH - RIGHT and x > LEFT:
            rows, x = rows + 1, float(LEFT)
        x += width
    return rows


def _linked(element: str, href: str | None) -> str:
    return f'<a href="{escape(href)}">{element}</a>' if href else element


def _close(parts: list[str]) -> SafeString:
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308  (every text is escaped where it is added)


def stacked_bars(
    *,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    fmt: Formatter = plain,
    empty: str = EMPTY,
    gap: float = 0.2,
    legend: bool = True,
    kind: str = "bars",
) -> SafeString:
    """One bar per label, the series stacked in the given order, bottom first."""
    totals = [sum(item.values[i] or 0 for item in series) for i in range(len(labels))]
    if not labels or not any(totals):
        return _empty(title, empty, kind=kind)
    frame = _Frame(nice_ticks(max(totals)), len(labels), _legend_rows(series) if legend else 0)
    summary = f"{fmt(sum(totals))} in all; highest {fmt(max(totals))} at {labels[totals.index(max(totals))]}"
    parts = _open(title, summary, kind=kind, height=HEIGHT)
    parts += _axes(frame, labels, fmt)
    parts.append('<g class="chart-bars">')
    bar_width = frame.slot * (1 - gap)
    for index, label in enumerate(labels):
        base = 0.0
        x = frame.x(index) + frame.slot * gap / 2
        for item in series:
            value = item.values[index] or 0
            if value <= 0:
                continue
            tip = f"{item.name}, {label}: {fmt(value)}"
            rect = (
                f'<rect class="{_css(item.css)}" x="{x:.1f}" y="{frame.y(base + value):.1f}" '
                f'width="{bar_width:.1f}" height="{frame.height_of(value):.1f}" data-value="{value:g}">'
                f"<title>{escape(tip)}</title></rect>"
            )
            parts.append(_linked(rect, item.links[index] if item.links else None))
            base += value
    parts.append("</g>")
    if legend:
        parts += _legend(series, frame)
    return _close(parts)


def grouped_bars(
    *,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    fmt: Formatter = plain,
    empty: str = EMPTY,
    top: float | None = None,
) -> SafeString:
    """One group per label, the series' bars side by side in the given order (e.g. two
    evaluations, metric by metric); ``top`` fixes the scale (1 for shares)."""
    values = [value for item in series for value in item.values if value is not None]
    if not labels or not series or not values:
        return _empty(title, empty, kind="grouped")
    frame = _Frame(nice_ticks(top if top is not None else max(values)), len(labels), _legend_rows(series))
    summary = "; ".join(
        f"{item.name}: "
        + ", ".join(
            f"{label} {fmt(value)}" for label, value in zip(labels, item.values, strict=True) if value is not None
        )
        for item in series
    )
    parts = _open(title, summary, kind="grouped", height=HEIGHT)
    parts += _axes(frame, labels, fmt)
    parts.append('<g class="chart-bars">')
    width = frame.slot * 0.8 / len(series)
    for index, label in enumerate(labels):
        for position, item in enumerate(series):
            value = item.values[index]
            if value is None:
                continue
            x = frame.x(index) + frame.slot * 0.1 + position * width
            parts.append(
                f'<rect class="{_css(item.css)}" x="{x:.1f}" y="{frame.y(value):.1f}" width="{width:.1f}" '
                f'height="{frame.height_of(value):.1f}" data-value="{value:g}">'
                f"<title>{escape(f'{item.name}, {label}: {fmt(value)}')}</title></rect>"
            )
    parts.append("</g>")
    parts += _legend(series, frame)
    return _close(parts)


def histogram(
    *,
    title: str,
    labels: Sequence[str],
    counts: Sequence[int],
    name: str = "count",
    css: str = "0",
    empty: str = EMPTY,
) -> SafeString:
    """Adjacent bars, one per bucket (``labels`` name the buckets, e.g. "≤ 30 s")."""
    return stacked_bars(
        title=title,
        labels=labels,
        series=[Series(name, list(counts), css)],
        empty=empty,
        gap=0.04,
        legend=False,
        kind="histogram",
    )


def line_chart(
    *,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    fmt: Formatter = plain,
    empty: str = EMPTY,
    top: float | None = None,
) -> SafeString:
    """A line per series, with a point (and its tooltip) at each value; gaps break the line.

    ``top`` fixes the y scale (e.g. 100 for percentages); otherwise it fits the values.
    """
    values = [value for item in series for value in item.values if value is not None]
    if not labels or not values:
        return _empty(title, empty, kind="lines")
    frame = _Frame(nice_ticks(top if top is not None else max(values)), len(labels), _legend_rows(series))
    summary = "; ".join(_line_summary(item, fmt) for item in series)
    parts = _open(title, summary, kind="lines", height=HEIGHT)
    parts += _axes(frame, labels, fmt)
    for item in series:
        css = _css(item.css)
        parts.append(f'<g class="chart-line {css}">')
        for run in _runs(item.values):
            points = " ".join(f"{frame.x(i) + frame.slot / 2:.1f},{frame.y(v):.1f}" for i, v in run)
            parts.append(f'<polyline class="{css}" points="{points}"/>')
        for index, value in enumerate(item.values):
            if value is None:
                continue
            tip = f"{item.name}, {labels[index]}: {fmt(value)}"
            x, y = frame.x(index) + frame.slot / 2, frame.y(value)
            parts.append(
                f'<circle class="{css}" cx="{x:.1f}" cy="{y:.1f}" r="3" data-value="{value:g}">'
                f"<title>{escape(tip)}</title></circle>"
            )
        parts.append("</g>")
    parts += _legend(series, frame)
    return _close(parts)


def _line_summary(item: Series, fmt: Formatter) -> str:
    known = [value for value in item.values if value is not None]
    if not known:
        return f"{item.name}: no values"
    return f"{item.name} from {fmt(min(known))} to {fmt(max(known))}"


def _runs(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """The unbroken stretches of a series (a gap ends one)."""
    stretches: list[list[tuple[int, float]]] = [[]]
    for index, value in enumerate(values):
        if value is None:
            if stretches[-1]:
                stretches.append([])
            continue
        stretches[-1].append((index, value))
    return [stretch for stretch in stretches if stretch]
