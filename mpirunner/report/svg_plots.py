"""SVG figures of the summary's HTML page (matplotlib, Agg): sweep curves and trend lines.

(The per-run latency histograms, hundreds on one page, are drawn directly by svg_histogram.py.)

Drawn to be read in black and white: each series has its own marker and line style as well as a
colour, INVALID points are hollow markers (with a legend entry), intervals are error bars, and
a regressed trend step is a downward triangle labelled "regressed".
"""
import io
from pathlib import Path

from mpirunner.report.finite import finite_number
from mpirunner.report.log_ticks import batch_size_axis
from mpirunner.report.plot import pyplot


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINE_STYLES = ("-", "--", ":", "-.")
MAX_SERIES = 12  # more files than that in one configuration: the oldest share one "earlier files" series
FIGURE_INCHES = 12.0  # wide figures: the page scales them to its width
FONT = {"svg.fonttype": "none", "font.size": 8, "svg.hashsalt": "mpirunner"}


def _svg(plt, figure):
    """The figure as SVG text (closed afterwards)."""
    buffer = io.StringIO()
    try:
        figure.savefig(buffer, format="svg")
    finally:
        plt.close(figure)
    return buffer.getvalue()


def _errors(rows, key):
    """Asymmetric error bars [[below], [above]] from the stored interval ends (0 where missing)."""
    below, above = [], []
    for row in rows:
        value, low, high = row.get(key), row.get(f"{key}_ci95_low"), row.get(f"{key}_ci95_high")
        below.append(max(value - low, 0.0) if finite_number(value) and finite_number(low) else 0.0)
        above.append(max(high - value, 0.0) if finite_number(value) and finite_number(high) else 0.0)
    return [below, above]


def _points(axes, rows, x_key, style, label):
    """Error-bar points of rows, valid ones filled, INVALID ones hollow; returns the line (its colour)."""
    rows = [row for row in rows if finite_number(row.get(x_key)) and finite_number(row.get("throughput"))]
    if not rows:
        return None
    rows.sort(key=lambda row: row[x_key])
    marker, line_style, colour = style
    x = [row[x_key] for row in rows]
    y = [row["throughput"] for row in rows]
    xerr = _errors(rows, x_key) if x_key == "latency_p99" else None
    line = axes.errorbar(x, y, yerr=_errors(rows, "throughput"), xerr=xerr, linestyle=line_style, marker=marker,
                         color=colour, capsize=2, linewidth=1, label=label)
    invalid = [(a, b) for a, b, row in zip(x, y, rows) if not row["valid"]]
    if invalid:  # drawn over the filled marker
        axes.plot(*zip(*invalid), linestyle="none", marker=marker, markerfacecolor="white", color=colour,
                  markersize=8)
    return line


def _styles():
    colours = [f"C{index}" for index in range(10)]
    for index in range(10 ** 6):
        yield MARKERS[index % len(MARKERS)], LINE_STYLES[index % len(LINE_STYLES)], colours[index % len(colours)]


def _invalid_legend(figure, axes, any_invalid):
    """The figure's one legend, outside the axes on the right (never over the data), however many series."""
    if any_invalid:
        axes.plot([], [], linestyle="none", marker="o", markerfacecolor="white", color="black",
                  label="INVALID run (hollow)")
    handles, labels = axes.get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, fontsize="x-small", loc="outside right upper")


def _fitted(title, figure_inches, font_points=10):
    """A title wrapped to the figure's width (a suptitle or axes title is not wrapped by matplotlib: it is cut)."""
    import textwrap

    per_line = max(int(figure_inches * 72 / (0.62 * font_points)), 20)
    return "\n".join(textwrap.wrap(title, per_line, break_on_hyphens=False))


def sweep_svg(title, series):
    """Throughput vs batch size and vs p99 latency of one configuration; series = [(label, [row, ...])]."""
    plt = pyplot()
    if len(series) > MAX_SERIES:
        older = [row for _label, rows in series[:len(series) - MAX_SERIES + 1] for row in rows]
        series = [("earlier files", older)] + list(series[len(series) - MAX_SERIES + 1:])
    with plt.rc_context(FONT):
        figure, (by_batch, by_p99) = plt.subplots(1, 2, figsize=(FIGURE_INCHES, 3.6), layout="constrained")
        any_invalid = False
        for (label, rows), style in zip(series, _styles()):
            _points(by_batch, rows, "batch_size", style, label)
            _points(by_p99, rows, "latency_p99", style, label)
            any_invalid = any_invalid or any(not row["valid"] for row in rows)
        sizes = sorted({row["batch_size"] for _label, rows in series for row in rows if finite_number(row["batch_size"])})
        batch_size_axis(by_batch, sizes)
        by_batch.set_xlabel("batch size (log2 scale)")
        by_p99.set_xlabel("p99 batch latency (ms)")
        for axes in (by_batch, by_p99):
            axes.set_ylabel("throughput (samples/s)")
            axes.grid(True, which="major", alpha=0.3)
            axes.margins(0.08)
        by_batch.set_title("Throughput vs batch size (95% CI)")
        by_p99.set_title("Throughput vs p99 latency (95% CI)")
        _invalid_legend(figure, by_batch, any_invalid)
        figure.suptitle(_fitted(title, FIGURE_INCHES))
        return _svg(plt, figure)


def trend_svg(title, steps):
    """Throughput of each step of one trend in order, with intervals; regressed steps marked and labelled."""
    plt = pyplot()
    with plt.rc_context(FONT):
        figure, axes = plt.subplots(figsize=(FIGURE_INCHES, 3.2), layout="constrained")
        rows = [run.row for _label, run in steps]
        x = list(range(len(rows)))
        y = [row["throughput"] if finite_number(row.get("throughput")) else float("nan") for row in rows]
        axes.errorbar(x, y, yerr=_errors(rows, "throughput"), color="C0", linestyle="-", marker="none", capsize=2,
                      linewidth=1, label="throughput (95% CI)")
        marks = (("regressed", "v", "black", "regressed"), ("improved", "^", "C2", "improved"))
        for index, (value, row) in enumerate(zip(y, rows)):
            hollow = not row["valid"]
            status = row.get("trend", "")
            marker, colour = next(((m, c) for name, m, c, _text in marks if status == name), ("o", "C0"))
            axes.plot([index], [value], linestyle="none", marker=marker, color=colour, markersize=8 if hollow else 6,
                      markerfacecolor="white" if hollow else colour)
            if status in ("regressed", "improved"):
                axes.annotate(status, (index, value), textcoords="offset points", xytext=(0, -14), ha="center",
                              fontsize="x-small")
        for name, marker, colour, text in marks:
            if any(row.get("trend") == name for row in rows):
                axes.plot([], [], linestyle="none", marker=marker, color=colour, label=text)
        _invalid_legend(figure, axes, any(not row["valid"] for row in rows))
        axes.set_xticks(x)
        axes.set_xticklabels([label[:19] for label, _run in steps], rotation=20, ha="right", fontsize="x-small")
        axes.set_ylabel("throughput (samples/s)")
        axes.grid(True, alpha=0.3)
        axes.set_title(_fitted(title, FIGURE_INCHES * 0.8, 8))
        return _svg(plt, figure)


def file_label(path):
    """A series label: the file's name (its folder too when short)."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name
