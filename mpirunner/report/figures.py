"""The figures of mpirunner-report, each drawn once: latency histogram, sweep curves, trend, server load curve.

matplotlib (Agg) draws them into the PNG of `--plot` or the SVG of the summary page (sweep_figure is both);
the page's per-run histograms, hundreds per page, are hand-drawn SVG (html.histogram_svg: about a
millisecond, where matplotlib takes tens) on the same ticks and percentile dashes as the PNG's. Log axes
read as plain numbers with their unit (0.5 ms, 1 ms, 2 ms), never 10^k; each series has its own marker
and line style, INVALID runs are hollow, so the figures read in black and white.
"""
import io
import math
import textwrap
from pathlib import Path

import numpy as np

from mpirunner.errors import UsageError
from mpirunner.report.rows import finite_number, finite_rows, first_run, run_latency, sorted_runs, summary_row

PNG_INCHES, PNG_DPI = (12.0, 5.0), 100  # -> 1200 x 500 pixels
SVG_INCHES = 12.0  # the page scales its figures to its width
SVG_FONT = {"svg.fonttype": "none", "font.size": 8, "svg.hashsalt": "mpirunner"}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINE_STYLES = ("-", "--", ":", "-.")
MAX_SERIES = 12  # more files than that in one sweep: the oldest share one "earlier files" series
PERCENTILE_DASHES = (("p50", 50, "--", "6,3"), ("p99", 99, ":", "2,2"))  # (name, q, matplotlib style, SVG dashes)
INVALID_LABEL = "INVALID run (hollow)"
# Ticks of a log axis: mantissas per decade, coarse to fine; the first series giving enough ticks is used.
TICK_SERIES = ((1.0,), (1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0),
               (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0))
MIN_BINS, MAX_BINS = 5, 80


# ----------------------------------------------------------------------------- axes and bins

def log_ticks(low, high, minimum=3, maximum=12):
    """Round tick values within [low, high] (> 0) for a log axis: the coarsest 1-2-5 style series that gives
    at least `minimum` ticks and at most `maximum`; over a narrow range (under a 1.25x span) evenly spaced round values."""
    if not (low > 0 and high > 0 and math.isfinite(low) and math.isfinite(high)):
        return []
    low, high = min(low, high), max(low, high)
    decades = range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
    best = []
    for series in TICK_SERIES:
        ticks = [m * 10.0 ** d for d in decades for m in series if low * (1 - 1e-9) <= m * 10.0 ** d <= high * (1 + 1e-9)]
        if len(ticks) > maximum and best:
            return best
        best = ticks
        if len(ticks) >= minimum:
            return ticks
    return _linear_ticks(low, high, minimum) if len(best) < minimum else best


def _linear_ticks(low, high, minimum):
    """Evenly spaced round values (step 1, 2 or 5 x 10^k) inside [low, high], at least `minimum` of them if possible."""
    span = high - low
    if span <= 0:
        return [low]
    step = 10.0 ** math.floor(math.log10(span))
    for factor in (1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01):
        ticks = np.arange(math.ceil(low / (step * factor)), math.floor(high / (step * factor)) + 1) * step * factor
        if ticks.size >= minimum:
            return [float(f"{tick:.12g}") for tick in ticks]
    return [low, high]


def sample_bins(count):
    """Histogram bins for `count` samples: about 2 x count^(1/3) (Rice's rule), 5 to 80 (20 -> 5, 1,000 -> 20)."""
    return int(min(MAX_BINS, max(MIN_BINS, round(2.0 * count ** (1.0 / 3.0))))) if count > 0 else MIN_BINS


def log_bin_edges(values):
    """Log-spaced bin edges spanning exactly the positive `values`, as many bins as sample_bins says."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return np.zeros(0)
    low, high = float(values.min()), float(values.max())
    if high <= low * 1.001:  # all (nearly) equal: one narrow range around them
        low, high = low / 1.05, high * 1.05
    return np.logspace(math.log10(low), math.log10(high), sample_bins(values.size) + 1)


def readable_log_axis(axis, low, high, unit):
    """Ticks of a matplotlib log axis as plain round numbers with their unit (0.5 ms, 1 ms, 2 ms), none as 10^k."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    axis.set_major_locator(FixedLocator(log_ticks(low, high)))
    axis.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:g} {unit}".strip()))
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())


def batch_size_axis(axes, sizes):
    """A log2 x axis with a tick at each batch size, labelled as the plain number (8, 16, 32), no minor labels."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    axes.set_xscale("log", base=2)
    if sizes:
        axes.set_xticks(sizes)
        axes.xaxis.set_major_formatter(ScalarFormatter())
        axes.xaxis.set_minor_formatter(NullFormatter())


def fitted(title, width_points, font_points, most=None):
    """The title wrapped to `width_points` (matplotlib cuts a long title; SVG text does not wrap), at most `most`
    lines (the last one shortened with an ellipsis)."""
    per_line = max(int(width_points / (0.62 * font_points)), 8)
    lines = textwrap.wrap(title, per_line, break_on_hyphens=False) or [""]
    if most and len(lines) > most:
        lines = lines[:most - 1] + [textwrap.shorten(" ".join(lines[most - 1:]), per_line, placeholder=" …")]
    return lines


# ---------------------------------------------------------------------------- matplotlib output

def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed); imported on call, as heavy imports are."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _svg(plt, figure):
    """The figure as SVG text (closed afterwards)."""
    buffer = io.StringIO()
    try:
        figure.savefig(buffer, format="svg")
    finally:
        plt.close(figure)
    return buffer.getvalue()


def plot(files, path, per_rank=False):
    """`--plot PATH.png`: the figure that fits the files (server runs -> load curve, one run -> histogram,
    several -> sweep curves); returns the path."""
    runs = [(job, run) for job in files for run in sorted_runs(job)]
    if not runs:
        raise UsageError("--plot: the files hold no runs")
    plt = pyplot()
    served = server_runs(files)
    if len(served) > 1:  # a --find-peak-qps search or a set of server runs
        figure = server_figure(plt, served, PNG_INCHES)
    elif len(runs) == 1:
        figure = _histogram_figure(plt, *runs[0], per_rank=per_rank)
    else:
        figure = _sweep_figure(plt, files)
    path = Path(path)
    try:
        figure.savefig(path, format="png", dpi=PNG_DPI)
    except OSError as error:
        raise UsageError(f"cannot write --plot {path}: {error.strerror or error}")
    finally:
        plt.close(figure)
    return path


# -------------------------------------------------------------------------------- latency histogram

def _histogram_figure(plt, job, run, per_rank):
    """One run's batch latencies (PNG): bins from the sample count, stacked per rank with --ranks, p50 and p99."""
    run, root = job.run(run) if isinstance(run, str) else run, job.attrs()
    latency = run_latency(run)
    latency = latency[latency > 0]
    figure, axes = plt.subplots(figsize=PNG_INCHES)
    if latency.size == 0:
        axes.text(0.5, 0.5, "no latencies stored", ha="center", transform=axes.transAxes)
        return figure
    edges_ms = log_bin_edges(latency) * 1e3  # bins from the sample count: 20 samples -> 5 bars, not 2
    ranks = finite_rows(run.arrays.batch_latency)
    if per_rank and len(ranks) > 1:
        colours = plt.get_cmap("tab10" if len(ranks) <= 10 else "viridis")
        axes.hist([row[row > 0] * 1e3 for row in ranks], bins=edges_ms, stacked=True,
                  label=[f"rank {index}" for index in range(len(ranks))],
                  color=[colours(index % 10 if len(ranks) <= 10 else index / (len(ranks) - 1))
                         for index in range(len(ranks))])
    else:
        axes.hist(latency * 1e3, bins=edges_ms, color="tab:blue", label="all ranks")
    for label, q, style, _dashes in PERCENTILE_DASHES:
        value_ms = float(np.percentile(latency, q) * 1e3)
        axes.axvline(value_ms, color="black", linestyle=style, linewidth=1.5, label=f"{label} {value_ms:.3f} ms")
    axes.set_xscale("log")
    readable_log_axis(axes.xaxis, edges_ms[0], edges_ms[-1], "ms")
    axes.set_xlabel("batch latency (ms, log scale)")
    axes.set_ylabel("micro-batches (count)")
    attrs = run.attrs()
    axes.set_title(f"Latency histogram: {attrs.get('model', '?')}, batch {attrs.get('batch_size', '?')}, "
                   f"{attrs.get('precision', '?')} ({attrs.get('dtype', root.get('dtype', '?'))}), "
                   f"{root.get('backend', '?')} on {root.get('device_name', '?')}, {root.get('world_size', '?')} "
                   f"rank(s), {latency.size} micro-batches")
    axes.legend(loc="best", fontsize="small")
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    return figure


# ------------------------------------------------------------------------------------ sweep curves

def _interval(rows, key):
    """Asymmetric error bars [[below], [above]] from the stored interval ends (0 where missing)."""
    below, above = [], []
    for row in rows:
        value, low, high = row.get(key), row.get(f"{key}_ci95_low"), row.get(f"{key}_ci95_high")
        below.append(max(value - low, 0.0) if finite_number(value) and finite_number(low) else 0.0)
        above.append(max(high - value, 0.0) if finite_number(value) and finite_number(high) else 0.0)
    return [below, above]


def _series(axes, rows, x_key, style, label, png):
    """A series through the runs in batch order with their error bars, INVALID runs hollow. PNG: a marker and an
    error bar per run (a handful), each point labelled with its batch size; SVG (a page may draw hundreds of runs
    in one sweep): one error bar for the series and the hollow markers over it, five times faster to draw."""
    rows = [row for row in rows if finite_number(row.get(x_key)) and finite_number(row.get("throughput"))]
    if not rows:
        return
    marker, line_style, colour = style
    x, y = [row[x_key] for row in rows], [row["throughput"] for row in rows]
    xerr = _interval(rows, x_key) if x_key == "latency_p99" else None
    yerr = _interval(rows, "throughput")
    if not png:
        axes.errorbar(x, y, yerr=yerr, xerr=xerr, linestyle=line_style, marker=marker, color=colour, capsize=2,
                      linewidth=1, label=label)
        hollow = [(a, b) for a, b, row in zip(x, y, rows) if not bool(row.get("valid", True))]
        if hollow:
            axes.plot(*zip(*hollow), linestyle="none", marker=marker, markerfacecolor="white", color=colour)
        return
    axes.plot(x, y, linestyle=line_style, color=colour, linewidth=1, label=label)
    for index, row in enumerate(rows):
        axes.errorbar([x[index]], [y[index]], fmt=marker, color=colour, capsize=3, elinewidth=1,
                      markerfacecolor=colour if bool(row.get("valid", True)) else "none",
                      xerr=None if xerr is None else [[xerr[0][index]], [xerr[1][index]]],
                      yerr=[[yerr[0][index]], [yerr[1][index]]])
        if x_key == "latency_p99":
            axes.annotate(f"bs {row['batch_size']}", (x[index], y[index]), textcoords="offset points", xytext=(4, 4),
                          fontsize="x-small")


def sweep_figure(plt, title, series, svg=False):
    """Throughput vs batch size and vs p99 latency (95% intervals as error bars): series = [(label, rows)],
    a row per run (batch_size, throughput, latency_p99, their _ci95_low/_high, valid). PNG: a legend on each
    axes and each point labelled with its batch size; SVG: one legend outside on the right, fitted titles."""
    if len(series) > MAX_SERIES:
        older = [row for _label, rows in series[:len(series) - MAX_SERIES + 1] for row in rows]
        series = [("earlier files", older)] + list(series[len(series) - MAX_SERIES + 1:])
    size = (SVG_INCHES, 3.6) if svg else PNG_INCHES
    figure, (by_batch, by_p99) = plt.subplots(1, 2, figsize=size, layout="constrained" if svg else None)
    for index, (label, rows) in enumerate(series):
        style = MARKERS[index % len(MARKERS)], LINE_STYLES[index % len(LINE_STYLES)], f"C{index % 10}"
        _series(by_batch, rows, "batch_size", style, label, png=not svg)
        _series(by_p99, rows, "latency_p99", style, label, png=not svg)
    if any(not bool(row.get("valid", True)) for _label, rows in series for row in rows):
        for axes in (by_batch, by_p99):  # one legend entry says what a hollow marker means
            axes.plot([], [], linestyle="none", marker="o", markerfacecolor="none", color="gray", label=INVALID_LABEL)
    batch_size_axis(by_batch, sorted({row["batch_size"] for _label, rows in series for row in rows
                                      if finite_number(row.get("batch_size"))}))
    by_batch.set_xlabel("batch size (samples per micro-batch, log2 scale)")
    by_p99.set_xlabel("p99 batch latency (ms)")
    by_batch.set_title("Throughput vs batch size (95% CI)")
    by_p99.set_title("Throughput vs p99 latency (95% CI)")
    for axes in (by_batch, by_p99):
        axes.set_ylabel("throughput (samples/s)")
        axes.grid(True, which="both" if not svg else "major", alpha=0.3)
        axes.margins(0.08)
    if svg:
        handles, labels = by_batch.get_legend_handles_labels()
        if handles:
            figure.legend(handles, labels, fontsize="x-small", loc="outside right upper")
        figure.suptitle("\n".join(fitted(title, SVG_INCHES * 72, 10)))
        return figure
    for axes in (by_batch, by_p99):
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="small")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def _sweep_figure(plt, files):
    """--plot of several runs (PNG): a series per file, rows recomputed from the arrays; the title holds what
    every file shares (model, precision, device, ranks), each label the file's name and what sets it apart."""
    described = []
    for job in files:
        first, root = first_run(job), job.attrs()
        attrs = first.attrs() if first is not None else {}
        described.append({"model": str(attrs.get("model", "?")), "precision": str(attrs.get("precision", "?")),
                          "device": f"{root.get('backend', '?')} on {root.get('device_name', '?')}",
                          "ranks": f"{root.get('world_size', '?')} rank(s)"})
    shared = [key for key in described[0] if all(item[key] == described[0][key] for item in described)]
    title = "Sweep: " + (", ".join(described[0][key] for key in shared) if shared else f"{len(files)} files")
    series = []
    for job, item in zip(files, described):
        name = Path(job.path).name
        if sum(Path(other.path).name == name for other in files) > 1:
            name = str(job.path)  # two files of the same name in different folders
        own = [item[key] for key in item if key not in shared]
        label = name + (f" ({', '.join(own)})" if own else "") if len(files) > 1 else "throughput (all ranks)"
        series.append((label, [summary_row(job, run) for run in sorted_runs(job)]))
    return sweep_figure(plt, title, series)


def sweep_svg(title, series):
    """The page's sweep of one configuration (SVG text); series = [(label, rows)] as sweep_figure takes."""
    plt = pyplot()
    with plt.rc_context(SVG_FONT):
        return _svg(plt, sweep_figure(plt, title, series, svg=True))


def file_label(path):
    """A series label: the file's name (its folder too when short)."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


# ------------------------------------------------------------------------------------------- trend

def trend_svg(title, rows, labels):
    """Throughput of each step of one trend in order, with intervals; regressed steps marked and labelled."""
    plt = pyplot()
    marks = (("regressed", "v", "black"), ("improved", "^", "C2"))
    with plt.rc_context(SVG_FONT):
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
        return _svg(plt, figure)


# ----------------------------------------------------------------------------- server load curve

def server_runs(files):
    """(target QPS, run attrs + '_plot_file') of every server run in the files, by load; [] when any run is not
    a server run. The target (not the realised Poisson count) is the axis a peak search moves along."""
    runs = [{**run.attrs(), "_plot_file": str(job.path or "")} for job in files for run in job.measured_runs]
    if not runs or any(attrs.get("scenario") != "server" for attrs in runs):
        return []
    return sorted(((float(attrs["target_qps"]), attrs) for attrs in runs), key=lambda pair: pair[0])


def server_figure(plt, runs, size_inches):
    """Query latency percentiles (ms, log y) against the target load; runs of different files or batch sizes
    are separate curves (one search each); invalid points (unserved: infinite) on the top edge of the finite values."""
    figure, axis = plt.subplots(figsize=size_inches)
    series = {}
    for qps, attrs in runs:
        series.setdefault((attrs.get("_plot_file", ""), attrs.get("batch_size")), []).append((qps, attrs))
    batches = [batch for _path, batch in series]
    names = {key: "" if len(series) == 1 else " (" + ", ".join(
        ([f"bs {key[1]}"] if key[1] is not None else []) + ([Path(key[0]).name] if batches.count(key[1]) > 1 else [])
    ) + ")" for key in series}  # the same batch size in several files: the file tells them apart
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    finite_top = 1.0
    for index, (key, points) in enumerate(series.items()):
        offered = np.array([qps for qps, _ in points])
        colour = colours[index % len(colours)] if len(series) > 1 else None
        for q, style in ((50, ":"), (90, "--"), (99, "-")):
            values = np.array([float(attrs.get(f"query_latency_p{q}", np.nan)) for _, attrs in points])
            finite = values[np.isfinite(values)]
            finite_top = max(finite_top, float(finite.max()) if finite.size else finite_top)
            axis.plot(offered, values, marker="o", linestyle=style, color=colour, label=f"p{q}{names[key]}")
        peaks = {float(attrs["peak_qps"]) for _, attrs in points if np.isfinite(float(attrs.get("peak_qps", np.nan)))}
        for peak in sorted(peaks):
            axis.axvline(peak, color=colour or "green", linestyle=":", label=f"peak {peak:.1f} QPS{names[key]}")
    for bound in sorted({float(attrs["latency_bound"]) for _, attrs in runs if "latency_bound" in attrs}):
        axis.axhline(bound, color="red", linestyle="--", label=f"bound {bound:g} ms")
    failed = [qps for qps, attrs in runs if not attrs.get("valid", True)]
    if failed:
        axis.scatter(failed, [finite_top] * len(failed), marker="x", color="black", label="invalid point")
    axis.set_yscale("log")
    readable_log_axis(axis.yaxis, *axis.get_ylim(), "ms")
    axis.set_xlabel("target load (queries/s, all ranks)")
    axis.set_ylabel("query latency (ms, from the scheduled arrival)")
    axis.set_title("server: query latency against offered load")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize="small")
    figure.tight_layout()
    return figure
