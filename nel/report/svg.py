"""Plots as inline SVG strings: a report must open with no network, so no plotting library from a CDN.

Two shapes cover the report: a line chart (pass@k, the concurrency limit over time, as steps)
and a histogram. Axis ticks are "nice" numbers; every mark carries a <title> so hovering shows
its value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

import numpy as np

W, H = 420, 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 12, 12, 34
COLORS = ("#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#718096")


def _ticks(low: float, high: float, n: int = 5) -> list[float]:
    if high <= low:
        high = low + 1.0
    step = 10 ** math.floor(math.log10((high - low) / n))
    for mult in (1, 2, 5, 10):
        if (high - low) / (step * mult) <= n:
            step *= mult
            break
    first = math.ceil(low / step) * step
    return [round(first + i * step, 10) for i in range(int((high - first) / step) + 1)]


def _fmt(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 or value == int(value) else f"{value:.3g}"


class _Frame:
    def __init__(self, x: tuple[float, float], y: tuple[float, float], x_label: str, y_label: str) -> None:
        self.x0, self.x1 = x if x[1] > x[0] else (x[0], x[0] + 1)
        self.y0, self.y1 = y if y[1] > y[0] else (y[0], y[0] + 1)
        self.labels = (x_label, y_label)

    def px(self, x: float) -> float:
        return _LEFT + (x - self.x0) / (self.x1 - self.x0) * (W - _LEFT - _RIGHT)

    def py(self, y: float) -> float:
        return H - _BOTTOM - (y - self.y0) / (self.y1 - self.y0) * (H - _TOP - _BOTTOM)

    def axes(self) -> list[str]:
        out = [f'<line x1="{_LEFT}" y1="{H - _BOTTOM}" x2="{W - _RIGHT}" y2="{H - _BOTTOM}" stroke="#888"/>',
               f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{H - _BOTTOM}" stroke="#888"/>']  # fmt: skip
        for t in _ticks(self.x0, self.x1):
            out.append(f'<text x="{self.px(t):.1f}" y="{H - _BOTTOM + 14}" text-anchor="middle">{_fmt(t)}</text>')
        for t in _ticks(self.y0, self.y1):
            y = self.py(t)
            out.append(f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{W - _RIGHT}" y2="{y:.1f}" stroke="#eee"/>')
            out.append(f'<text x="{_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
        out.append(f'<text x="{(W + _LEFT) / 2}" y="{H - 4}" text-anchor="middle">{escape(self.labels[0])}</text>')
        out.append(f'<text x="12" y="{(H - _BOTTOM + _TOP) / 2}" text-anchor="middle" '
                   f'transform="rotate(-90 12 {(H - _BOTTOM + _TOP) / 2})">{escape(self.labels[1])}</text>')  # fmt: skip
        return out


def _svg(parts: list[str], title: str) -> str:
    return (f'<svg class="plot" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
            f'aria-label="{escape(title)}" font-size="10" font-family="sans-serif">'
            + "".join(parts) + "</svg>")  # fmt: skip


def line_chart(series: Mapping[str, Sequence[tuple[float, float]]], x_label: str, y_label: str, *,
               steps: bool = False, y_range: tuple[float, float] | None = None) -> str:  # fmt: skip
    """One polyline per series (steps: hold each value until the next point), with dots unless steps."""
    points = [p for s in series.values() for p in s]
    if not points:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    frame = _Frame((min(xs), max(xs)), y_range or (min(0.0, min(ys)), max(ys)), x_label, y_label)
    parts = frame.axes()
    for i, (name, pts) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        coords = []
        for j, (x, y) in enumerate(pts):
            if steps and j:
                coords.append(f"{frame.px(x):.1f},{frame.py(pts[j - 1][1]):.1f}")
            coords.append(f"{frame.px(x):.1f},{frame.py(y):.1f}")
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(coords)}">'
                     f"<title>{escape(name)}</title></polyline>")  # fmt: skip
        if not steps:
            parts += [f'<circle cx="{frame.px(x):.1f}" cy="{frame.py(y):.1f}" r="3" fill="{color}">'
                      f"<title>{escape(name)} {_fmt(x)}: {_fmt(y)}</title></circle>" for x, y in pts]  # fmt: skip
    if len(series) > 1:
        parts += [f'<text x="{W - _RIGHT}" y="{_TOP + 12 * (i + 1)}" text-anchor="end" fill="{COLORS[i % len(COLORS)]}">'
                  f"{escape(name)}</text>" for i, name in enumerate(series)]  # fmt: skip
    return _svg(parts, y_label)


def histogram(values: np.ndarray, x_label: str, bins: int = 30) -> str:
    """Counts of ``values`` in ``bins`` equal-width bins (an empty string when there is nothing to count)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return ""
    counts, edges = np.histogram(values, bins=bins)
    frame = _Frame((float(edges[0]), float(edges[-1])), (0.0, float(counts.max())), x_label, "rows")
    parts = frame.axes()
    for count, low, high in zip(counts, edges[:-1], edges[1:]):
        if count:
            x, y = frame.px(float(low)), frame.py(float(count))
            width = max(1.0, frame.px(float(high)) - x - 1)
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{H - _BOTTOM - y:.1f}" '
                         f'fill="{COLORS[0]}"><title>{_fmt(low)}–{_fmt(high)}: {count}</title></rect>')  # fmt: skip
    return _svg(parts, x_label)
