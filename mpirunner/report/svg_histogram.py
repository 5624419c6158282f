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

WIDTH, HEIGHT = 900, 250
LEFT, RIGHT, TOP, BOTTOM = 56, 885, 44, 202  # the plot area
TITLE_FONT_PX = 11
CHARACTER_EM = 0.62  # a wide sans-serif character (DejaVu Sans digits and capitals); titles are fitted with it


def title_lines(title, width=WIDTH - 16, font_px=TITLE_FONT_PX, most=2):
    """The title in at most `most` lines that fit in `width` px (the last one cut with an ellipsis if need be)."""
    import textwrap

    per_line = max(int(width / (CHARACTER_EM * font_px)), 8)
    lines = textwrap.wrap(title, per_line, break_on_hyphens=False) or [""]
    if len(lines) > most:
        lines = lines[:most - 1] + [textwrap.shorten(" ".join(lines[most - 1:]), per_line, placeholder=" …")]
    return lines


def histogram_svg(title, counts, edges, row):
    """The SVG of one histogram: counts per bin, bin edges in seconds, row's latency_p50 / p99 in ms."""
    counts = np.asarray(counts, dtype=np.float64)
    edges_ms = np.asarray(edges, dtype=np.float64) * 1e3
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="10">',
             f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
             *(f'<text x="{WIDTH / 2}" y="{14 + 13 * index}" text-anchor="middle" font-size="{TITLE_FONT_PX}">'
               f'{escape(line)}</text>' for index, line in enumerate(title_lines(title)))]
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
            key_x = RIGHT - 280 + 140 * index  # the key sits above the plot area, off the bars
            parts.append(f'<path d="M{key_x},{TOP - 9} h24" stroke="#000" stroke-width="1.3" '
                         f'stroke-dasharray="{dash}"/><text x="{key_x + 28}" y="{TOP - 6}">'
                         f"{name} {value:.3f} ms</text>")
    parts.append("</svg>")
    return "".join(parts)
