"""A run's latency histogram as SVG text, drawn directly (no matplotlib) for the summary's HTML page.

A page holds one histogram per run, hundreds of them: matplotlib takes tens of milliseconds per
figure, this about one. The stored log-spaced bins are grey bars on a log x axis (ms), p50 a
dashed and p99 a dotted black line, each named in words, so the figure reads without colour.
"""
import math
from xml.sax.saxutils import escape

import numpy as np

from mpirunner.report.finite import finite_number
from mpirunner.report.log_ticks import log_ticks

WIDTH, HEIGHT = 600, 230
LEFT, RIGHT, TOP, BOTTOM = 56, 585, 34, 182  # the plot area


def histogram_svg(title, counts, edges, row):
    """The SVG of one histogram: counts per bin, bin edges in seconds, row's latency_p50 / p99 in ms."""
    counts = np.asarray(counts, dtype=np.float64)
    edges_ms = np.asarray(edges, dtype=np.float64) * 1e3
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="10">',
             f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
             f'<text x="{WIDTH / 2}" y="14" text-anchor="middle" font-size="11">{escape(title)}</text>']
    usable = counts.size and edges_ms.size == counts.size + 1 and (edges_ms > 0).all() and counts.max() > 0
    if not usable:
        parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no histogram stored</text></svg>')
        return "".join(parts)
    low, high = math.log10(edges_ms[0]), math.log10(edges_ms[-1])
    span = max(high - low, 1e-9)

    def x(value_ms):
        return LEFT + (math.log10(value_ms) - low) / span * (RIGHT - LEFT)

    def y(count):
        return BOTTOM - count / counts.max() * (BOTTOM - TOP)

    for count, start, end in zip(counts, edges_ms[:-1], edges_ms[1:]):
        if count > 0:
            parts.append(f'<rect x="{x(start):.1f}" y="{y(count):.1f}" width="{max(x(end) - x(start), 0.5):.1f}" '
                         f'height="{BOTTOM - y(count):.1f}" fill="#aaa" stroke="#000" stroke-width="0.5"/>')
    parts.append(f'<path d="M{LEFT},{TOP} V{BOTTOM} H{RIGHT}" fill="none" stroke="#000"/>')
    for tick in log_ticks(edges_ms[0], edges_ms[-1]):  # round values (0.5, 1, 2, 5), not evenly spaced logs
        parts.append(f'<path d="M{x(tick):.1f},{BOTTOM} v4" stroke="#000"/><text x="{x(tick):.1f}" '
                     f'y="{BOTTOM + 14}" text-anchor="middle">{tick:g}</text>')
    for count in (0, counts.max() / 2, counts.max()):
        parts.append(f'<path d="M{LEFT},{y(count):.1f} h-4" stroke="#000"/><text x="{LEFT - 6}" y="{y(count) + 3:.1f}" '
                     f'text-anchor="end">{count:.0f}</text>')
    parts.append(f'<text x="{(LEFT + RIGHT) / 2}" y="{HEIGHT - 8}" text-anchor="middle">'
                 "batch latency (ms, log scale)</text>")
    parts.append(f'<text x="12" y="{(TOP + BOTTOM) / 2}" text-anchor="middle" '
                 f'transform="rotate(-90 12 {(TOP + BOTTOM) / 2})">micro-batches</text>')
    for index, (name, dash) in enumerate((("p50", "6,3"), ("p99", "2,2"))):
        value = row.get(f"latency_{name}")
        if finite_number(value) and edges_ms[0] <= value <= edges_ms[-1]:
            parts.append(f'<path d="M{x(value):.1f},{TOP} V{BOTTOM}" stroke="#000" stroke-width="1.3" '
                         f'stroke-dasharray="{dash}"/>')
        if finite_number(value):
            parts.append(f'<path d="M{RIGHT - 120},{TOP + 6 + 13 * index} h24" stroke="#000" stroke-width="1.3" '
                         f'stroke-dasharray="{dash}"/><text x="{RIGHT - 92}" y="{TOP + 9 + 13 * index}">'
                         f"{name} {value:.3f} ms</text>")
    parts.append("</svg>")
    return "".join(parts)
