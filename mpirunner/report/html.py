"""`mpirunner-report summary --html OUT.html`: one self-contained static page over many runs, no JavaScript.
Figures are SVG data URIs (so their ids cannot clash); the per-run histograms, hundreds on a page, are drawn by
hand (about a millisecond each, where matplotlib takes tens). INVALID is written out, never only coloured."""
import base64
import math
from html import escape
from pathlib import Path

import numpy as np

from mpirunner.errors import UsageError
from mpirunner.report.figures import (INVALID_LABEL, PERCENTILE_DASHES, SVG_INCHES, _interval, fitted, log_ticks,
                                      server_figure, svg_figure, sweep_figure)
from mpirunner.report.rows import finite_number
from mpirunner.report.summary import (SWEEP_KEYS, configuration_text, interval_cell, table_columns, trend_cell,
                                      trend_title)
from mpirunner.runfile.block import format_run_block, verdict_text

STYLE = """
body { font-family: sans-serif; color: #000; background: #fff; margin: 1.5em; }
table { border-collapse: collapse; font-size: 0.8em; }
div.scroll { overflow-x: auto; }  /* a wide table scrolls by itself; the page keeps its width */
th, td { border: 1px solid #000; padding: 0.2em 0.4em; text-align: left; vertical-align: top; }
thead { display: table-header-group; }
tr.invalid td { font-style: italic; border-left: 3px double #000; }
td.verdict-invalid { font-weight: bold; }
td.reasons details { max-width: 40em; }
td.reasons summary { cursor: pointer; white-space: nowrap; }
pre { font-size: 0.8em; border: 1px solid #000; padding: 0.5em; white-space: pre-wrap; }
figure { margin: 1em 0; break-inside: avoid; page-break-inside: avoid; }
figure img { width: 100%; height: auto; }
section.run { break-inside: avoid; page-break-inside: avoid; border-top: 1px solid #000; }
@media print { a { color: #000; text-decoration: none; } body { margin: 0; } }
"""


def _image(svg_text, alt, kind):
    data = base64.b64encode(svg_text.encode("utf-8")).decode("ascii")
    return (f'<figure class="{kind}"><img src="data:image/svg+xml;base64,{data}" alt="{escape(alt)}">'
            f"<figcaption>{escape(alt)}</figcaption></figure>")


def _table(runs, with_trend):
    columns = [(title, cell) for title, _width, cell in table_columns(runs) if title != "file"]
    columns += [("trend", trend_cell)] if with_trend else []
    headers = ["run"] + [title for title, _cell in columns] + ["reasons"]
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    lines = ['<div class="scroll"><table id="summary">', f"<thead><tr>{head}</tr></thead>", "<tbody>"]
    for index, run in enumerate(runs):
        row = run.row
        cells = [f'<td><a href="#run-{index}">{escape(row["file"])}:{escape(row["run"])}</a></td>']
        for title, cell in columns:
            kind = ' class="verdict-invalid"' if title == "verdict" and not row["valid"] else ""
            cells.append(f"<td{kind}>{escape(cell(row))}</td>")
        cells.append(f'<td class="reasons">{_reasons_cell(row)}</td>')
        marker = ' class="invalid"' if not row["valid"] else ""
        lines.append(f"<tr{marker}>" + "".join(cells) + "</tr>")
    lines += ["</tbody>", "</table></div>"]
    return "\n".join(lines)


def _reasons(row):
    """A run's validity reasons as a list (stored as '; '-joined text in the summary's rows)."""
    return [reason for reason in str(row.get("validity_reason") or "").split("; ") if reason]


def _reasons_cell(row):
    """The reasons folded under their count (<details>), so that a row stays a line tall until opened."""
    reasons = _reasons(row)
    if not reasons:
        return ""
    items = "".join(f"<li>{escape(reason)}</li>" for reason in reasons)
    return f"<details><summary>{len(reasons)} reason(s)</summary><ul>{items}</ul></details>"


def _server_loads(runs):
    """Per file of server runs (a peak search's points), figures.server_figure: the points told apart by load."""
    files = {}
    for run in runs:
        if run.row.get("scenario") == "server" and finite_number(run.run.scenario.target_qps):
            files.setdefault(run.row["file"], []).append((float(run.run.scenario.target_qps), run.run, run.row["file"]))
    parts = []
    for path, points in files.items():
        svg = svg_figure(server_figure, sorted(points, key=lambda point: point[0]), (SVG_INCHES, 4.0))
        parts.append(_image(svg, f"Server load: {file_label(path)}", "server"))
    return "\n".join(parts)


def _sweeps(runs):
    """One figure per configuration, a series per file (scenario runs are not sweeps: _server_loads draws them)."""
    groups = {}
    for run in (run for run in runs if not run.row.get("scenario")):
        key = tuple(run.row.get(name, "") for name in SWEEP_KEYS)
        groups.setdefault(key, {}).setdefault(run.row["file"], []).append(run.row)
    parts = []
    for key in sorted(groups, key=lambda key: tuple(str(part) for part in key)):
        title = configuration_text(key)
        series = sorted(groups[key].items(), key=lambda item: (str(item[1][0].get("created", "")), item[0]))
        svg = svg_figure(sweep_figure, title, [(file_label(path), rows) for path, rows in series], svg=True)
        parts.append(_image(svg, f"Sweep: {title}", "sweep"))
    return "\n".join(parts)


def _trends(trends):
    parts = []
    for trend in (trend for trend in trends if len(trend.steps) >= 2):
        title = f"Trend: {trend_title(trend)}"
        parts.append(_image(svg_figure(_trend_figure, title, [run.row for _label, run in trend.steps],
                                       [label for label, _run in trend.steps]), title, "trend"))
    return "\n".join(parts) or "<p>No configuration has two or more runs.</p>"


def run_block(run):
    """The run's full text block as the runner printed it; its stored attributes when they lack a field for it."""
    world_size = "?" if run.job.world_size is None else run.job.world_size
    try:
        return format_run_block(run.run, world_size).strip("\n")
    except (AttributeError, KeyError, TypeError, ValueError):  # a file too old or too odd for the block
        lines = [f"{key}: {value}" for key, value in sorted(run.attrs.items())]
        return "\n".join([verdict_text(run.run)] + lines)


def _runs(runs):
    parts = []
    for index, run in enumerate(runs):
        row = run.row
        figure = "<p>(no histogram stored)</p>"
        if run.histogram is not None:  # the verdict with the number of reasons; the reasons are in the table
            count = len(_reasons(row))
            verdict = "VALID" if row["valid"] else f"INVALID ({count})" if count else "INVALID"
            title = f"{row['model']} batch {row['batch_size']}, {row['device_name']}: latency histogram, {verdict}"
            figure = _image(histogram_svg(title, *run.histogram, row), title, "histogram")
        parts.append(f'<section class="run" id="run-{index}"><h3>{escape(row["file"])}:{escape(row["run"])}</h3>'
                     f"<p>throughput {escape(interval_cell(row, 'throughput', '.2f'))} samples/s, "
                     f"created {escape(str(row['created']))}, commit {escape(str(row['git_commit']) or '-')}</p>"
                     f"<pre>{escape(run_block(run))}</pre>{figure}"
                     '<p><a href="#summary">back to the table</a></p></section>')
    return "\n".join(parts)


def page(summary, runs, trends=None, paths=()):
    """The whole page as text: what was read, skipped files, the table, sweeps, trends and every run."""
    skipped = "".join(f"<li>{escape(path)}: {escape(reason)}</li>" for path, reason in summary.skipped)
    others = (f"<p>{summary.other_files} other file(s) skipped (not *.h5 or *.hdf5).</p>"
              if summary.other_files else "")
    sources = ", ".join(escape(str(path)) for path in paths)
    invalid = sum(not run.row["valid"] for run in runs)
    body = [f"<h1>mpirunner summary</h1>",
            f"<p>{len(runs)} run(s), {invalid} INVALID, from {sources or 'the given files'}. "
            "Throughput in samples/s, latency in ms; brackets hold the stored 95% intervals. "
            "Each run links to its full block below.</p>",
            (f"<h2>Skipped files</h2><ul>{skipped}</ul>" if skipped else "") + others,
            "<h2>Runs</h2>", _table(runs, trends is not None),
            "<h2>Sweep curves</h2>",
            "<p>Per configuration: throughput against batch size and against p99 latency, a series per file; "
            "error bars are the 95% intervals, hollow markers INVALID runs.</p>", _sweeps(runs), _server_loads(runs)]
    if trends is not None:
        body += ["<h2>Trends</h2>", _trends(trends)]
    body += ["<h2>Every run</h2>", _runs(runs)]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>mpirunner summary</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def write_page(path, text):
    """Write the page; UsageError with one line when it cannot be written."""
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot write --html {path}: {error.strerror or error}")
    return Path(path)


def file_label(path):
    """A series label: the file's name (its folder too when short)."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def _trend_figure(plt, title, rows, labels):
    """Throughput of each step of one trend in order, with intervals; regressed steps marked and labelled."""
    marks = (("regressed", "v", "black"), ("improved", "^", "C2"))
    figure, axes = plt.subplots(figsize=(SVG_INCHES, 3.2), layout="constrained")
    x = list(range(len(rows)))
    y = [row["throughput"] if finite_number(row.get("throughput")) else float("nan") for row in rows]
    axes.errorbar(x, y, yerr=_interval(rows, "throughput"), color="C0", linestyle="-", marker="none", capsize=2,
                  linewidth=1, label="throughput (95% CI)")
    for index, (value, row) in enumerate(zip(y, rows)):
        hollow, status = not row["valid"], row.get("trend", "")
        marker, colour = next(((m, c) for name, m, c in marks if status == name), ("o", "C0"))
        axes.plot([index], [value], linestyle="none", marker=marker, color=colour, markersize=8 if hollow else 6,
                  markerfacecolor="white" if hollow else colour)
        if status in ("regressed", "improved"):
            axes.annotate(status, (index, value), textcoords="offset points", xytext=(0, -14), ha="center",
                          fontsize="x-small")
    for name, marker, colour in marks:
        if any(row.get("trend") == name for row in rows):
            axes.plot([], [], linestyle="none", marker=marker, color=colour, label=name)
    if any(not row["valid"] for row in rows):
        axes.plot([], [], linestyle="none", marker="o", markerfacecolor="white", color="black", label=INVALID_LABEL)
    figure.legend(*axes.get_legend_handles_labels(), fontsize="x-small", loc="outside right upper")
    axes.set_xticks(x)
    axes.set_xticklabels([label[:19] for label in labels], rotation=20, ha="right", fontsize="x-small")
    axes.set_ylabel("throughput (samples/s)")
    axes.grid(True, alpha=0.3)
    axes.set_title("\n".join(fitted(title, SVG_INCHES * 0.8 * 72, 8)))
    return figure


SVG_WIDTH, SVG_HEIGHT = 900, 250
LEFT, RIGHT, TOP, BOTTOM = 56, 885, 44, 202  # the plot area of a hand-drawn histogram
TITLE_FONT_PX = 11


def histogram_svg(title, counts, edges, row):
    """The page's SVG of one run's stored histogram: counts per bin, bin edges in s, row's latency_p50 / p99 in ms."""
    counts = np.asarray(counts, dtype=np.float64)
    edges_ms = np.asarray(edges, dtype=np.float64) * 1e3
    width, height = SVG_WIDTH, SVG_HEIGHT
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             *(f'<text x="{width / 2}" y="{14 + 13 * index}" text-anchor="middle" font-size="{TITLE_FONT_PX}">'
               f'{escape(line)}</text>' for index, line in enumerate(fitted(title, width - 16, TITLE_FONT_PX, 2)))]
    if not (counts.size and edges_ms.size == counts.size + 1 and (edges_ms > 0).all() and counts.max() > 0):
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no histogram stored</text></svg>')
        return "".join(parts)
    low, span = math.log10(edges_ms[0]), max(math.log10(edges_ms[-1]) - math.log10(edges_ms[0]), 1e-9)

    def x(value_ms):
        return LEFT + (math.log10(value_ms) - low) / span * (RIGHT - LEFT)

    def y(count):
        return BOTTOM - count / counts.max() * (BOTTOM - TOP)

    for count, start, end in zip(counts, edges_ms[:-1], edges_ms[1:]):
        if count > 0:
            parts.append(f'<rect x="{x(start):.1f}" y="{y(count):.1f}" width="{max(x(end) - x(start), 0.5):.1f}" '
                         f'height="{BOTTOM - y(count):.1f}" fill="#aaa" stroke="#000" stroke-width="0.5"/>')
    parts.append(f'<path d="M{LEFT},{TOP} V{BOTTOM} H{RIGHT}" fill="none" stroke="#000"/>')
    for tick in log_ticks(edges_ms[0], edges_ms[-1]):
        parts.append(f'<path d="M{x(tick):.1f},{BOTTOM} v4" stroke="#000"/><text x="{x(tick):.1f}" '
                     f'y="{BOTTOM + 14}" text-anchor="middle">{tick:g}</text>')
    for count in (0, counts.max() / 2, counts.max()):
        parts.append(f'<path d="M{LEFT},{y(count):.1f} h-4" stroke="#000"/><text x="{LEFT - 6}" y="{y(count) + 3:.1f}" '
                     f'text-anchor="end">{count:.0f}</text>')
    parts.append(f'<text x="{(LEFT + RIGHT) / 2}" y="{height - 8}" text-anchor="middle">'
                 "batch latency (ms, log scale)</text>")
    parts.append(f'<text x="12" y="{(TOP + BOTTOM) / 2}" text-anchor="middle" '
                 f'transform="rotate(-90 12 {(TOP + BOTTOM) / 2})">micro-batches</text>')
    for index, (name, _q, _style, dashes) in enumerate(PERCENTILE_DASHES):
        value = row.get(f"latency_{name}")
        if finite_number(value) and edges_ms[0] <= value <= edges_ms[-1]:
            parts.append(f'<path d="M{x(value):.1f},{TOP} V{BOTTOM}" stroke="#000" stroke-width="1.3" '
                         f'stroke-dasharray="{dashes}"/>')
        if finite_number(value):
            key_x = RIGHT - 280 + 140 * index  # the key sits above the plot area, off the bars
            parts.append(f'<path d="M{key_x},{TOP - 9} h24" stroke="#000" stroke-width="1.3" '
                         f'stroke-dasharray="{dashes}"/><text x="{key_x + 28}" y="{TOP - 6}">'
                         f"{name} {value:.3f} ms</text>")
    parts.append("</svg>")
    return "".join(parts)
