"""The figures of mpirunner-report (latency histogram, sweep curves, server load curve), the histograms' one binning
and the log axes' ticks: matplotlib (Agg) draws the PNG of `--plot` and the page's SVGs. Markers, line styles and
hollow INVALID runs make them read in black and white."""
import io
import math
import textwrap
from pathlib import Path

import numpy as np

from mpirunner import stats
from mpirunner.errors import UsageError
from mpirunner.report.rows import finite_number, finite_rows, first_attrs, run_latency, sorted_runs, summary_row
from mpirunner.runfile import shown
from mpirunner.runfile.run import Run

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


def log_ticks(low, high, minimum=3, maximum=12):
    """Round tick values within [low, high] for a log axis: the coarsest 1-2-5 style series giving enough."""
    if not (low > 0 and high > 0 and math.isfinite(low) and math.isfinite(high)):
        return []
    low, high = min(low, high), max(low, high)
    decades = range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
    best = []
    for series in TICK_SERIES:
        ticks = [m * 10.0 ** d for d in decades for m in series
                 if low * (1 - 1e-9) <= m * 10.0 ** d <= high * (1 + 1e-9)]
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


def latency_bins(latency_seconds, max_rows=None):
    """(the finite positive latencies, counts, bin edges in s) over log-spaced bins: every histogram's binning. max_rows
    (text): the runner's round bins, as many per decade as fit; else (PNG) sample_bins over the latencies' span."""
    values = np.asarray(latency_seconds, dtype=np.float64)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return values, np.zeros(0, dtype=np.int64), np.zeros(0)
    if max_rows:
        decades = max(np.log10(values.max() / values.min()), 1e-9)
        per_decade = int(max(1, min(20, max_rows // max(decades, 1))))
        return (values, *stats.log_histogram(values, bins_per_decade=per_decade))
    low, high = float(values.min()), float(values.max())
    if high <= low * 1.001:  # all (nearly) equal: one narrow range around them
        low, high = low / 1.05, high * 1.05
    edges = np.logspace(math.log10(low), math.log10(high), sample_bins(values.size) + 1)
    return values, np.histogram(values, edges)[0], edges


def readable_log_axis(axis, low, high, unit):
    """Ticks of a matplotlib log axis as plain round numbers with their unit (0.5 ms, 1 ms, 2 ms), none as 10^k."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    axis.set_major_locator(FixedLocator(log_ticks(low, high)))
    axis.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:g} {unit}".strip()))
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())


def fitted(title, width_points, font_points, most=None):
    """The title wrapped to `width_points` (SVG text does not wrap), at most `most` lines (then an ellipsis)."""
    per_line = max(int(width_points / (0.62 * font_points)), 8)
    lines = textwrap.wrap(title, per_line, break_on_hyphens=False) or [""]
    if most and len(lines) > most:
        lines = lines[:most - 1] + [textwrap.shorten(" ".join(lines[most - 1:]), per_line, placeholder=" …")]
    return lines


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed); imported on call, as heavy imports are."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def svg_figure(draw, *args, **kwargs):
    """The figure draw(plt, *args, **kwargs) makes, drawn in the page's font, as SVG text (closed afterwards)."""
    plt, buffer = pyplot(), io.StringIO()
    with plt.rc_context(SVG_FONT):
        figure = draw(plt, *args, **kwargs)
        try:
            figure.savefig(buffer, format="svg")
        finally:
            plt.close(figure)
    return buffer.getvalue()


def plot(files, path, per_rank=False):
    """`--plot PATH.png`: server runs -> load curve, one run -> histogram, several -> sweep curves."""
    runs = [(job, run) for job in files for run in sorted_runs(job)]
    if not runs:
        raise UsageError("--plot: the files hold no runs")
    plt = pyplot()
    if len(runs) > 1 and all(run.scenario is not None and run.scenario.scenario == "server" for _job, run in runs):
        # a --find-peak-qps search or a set of server runs, by load (the axis a search moves along)
        served = sorted(((float(run.scenario.target_qps), run, str(job.path or "")) for job in files
                         for run in job.measured_runs), key=lambda point: point[0])
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


def _histogram_figure(plt, job, run, per_rank):
    """One run's batch latencies (PNG): bins from the sample count, stacked per rank with --ranks, p50 and p99."""
    run, root = job.run(run) if isinstance(run, str) else run, job.attrs()
    latency, _counts, edges = latency_bins(run_latency(run))  # matplotlib counts each rank's share of the bins
    figure, axes = plt.subplots(figsize=PNG_INCHES)
    if latency.size == 0:
        axes.text(0.5, 0.5, "no latencies stored", ha="center", transform=axes.transAxes)
        return figure
    edges_ms = edges * 1e3  # bins from the sample count: 20 samples -> 5 bars, not 2
    ranks = finite_rows(run.arrays.batch_latency)
    if per_rank and len(ranks) > 1:
        colours = plt.get_cmap("tab10" if len(ranks) <= 10 else "viridis")
        axes.hist([row[row > 0] * 1e3 for row in ranks], bins=edges_ms, stacked=True,
                  label=[f"rank {index}" for index in range(len(ranks))],
                  color=[colours(index % 10 if len(ranks) <= 10 else index / (len(ranks) - 1))
                         for index in range(len(ranks))])
    else:
        axes.hist(latency * 1e3, bins=edges_ms, color="tab:blue", label="all ranks")
    for label, q, style, _dashes in PERCENTILE_DASHES:  # each with enough latencies for it (runfile/shown.py)
        if not stats.enough_for_percentile(latency.size, q):
            continue
        value_ms = float(np.percentile(latency, q) * 1e3)
        axes.axvline(value_ms, color="black", linestyle=style, linewidth=1.5, label=f"{label} {value_ms:.3f} ms")
    axes.set_xscale("log")
    readable_log_axis(axes.xaxis, edges_ms[0], edges_ms[-1], "ms")
    axes.set(xlabel="batch latency (ms, log scale)", ylabel="micro-batches (count)")
    attrs = run.attrs()
    axes.set_title(f"Latency histogram: {attrs.get('model', '?')}, batch {attrs.get('batch_size', '?')}, "
                   f"{attrs.get('precision', '?')} ({attrs.get('dtype', root.get('dtype', '?'))}), "
                   f"{root.get('backend', '?')} on {root.get('device_name', '?')}, {root.get('world_size', '?')} "
                   f"rank(s), {latency.size} micro-batches")
    axes.legend(loc="best", fontsize="small")
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    return figure


def _interval(rows, key):
    """Asymmetric error bars [[below], [above]] from the stored interval ends (0 where missing)."""
    ends = [(row.get(key), row.get(f"{key}_ci95_low"), row.get(f"{key}_ci95_high")) for row in rows]
    return [[max(value - low, 0.0) if finite_number(value) and finite_number(low) else 0.0 for value, low, _ in ends],
            [max(high - value, 0.0) if finite_number(value) and finite_number(high) else 0.0
             for value, _, high in ends]]


def _series(axes, rows, x_key, style, label, png):
    """A series through the runs with their error bars, INVALID runs hollow; the SVG's (hundreds on a page) as one
    error bar plot, five times faster to draw than the PNG's point by point."""
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
    """Throughput vs batch size and vs p99 latency with their 95% intervals: series = [(label, rows)]."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

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
    by_batch.set_xscale("log", base=2)  # a tick at each batch size, labelled as the plain number (8, 16, 32)
    sizes = sorted({row["batch_size"] for _label, rows in series for row in rows
                    if finite_number(row.get("batch_size"))})
    if sizes:
        by_batch.set_xticks(sizes)
        by_batch.xaxis.set_major_formatter(ScalarFormatter())
        by_batch.xaxis.set_minor_formatter(NullFormatter())
    by_batch.set(xlabel="batch size (samples per micro-batch, log2 scale)", title="Throughput vs batch size (95% CI)")
    by_p99.set(xlabel="p99 batch latency (ms)", title="Throughput vs p99 latency (95% CI)")
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
    """--plot of several runs: a series per file, the title what they share, each label what sets it apart."""
    described = []
    for job in files:
        attrs, root = first_attrs(job), job.attrs()
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


def _or_nan(value):
    return float(value) if finite_number(value) else float("nan")


def server_figure(plt, runs, size_inches):
    """Server points (target QPS, Run or its attributes[, file]) by load, a curve per file and batch size. Left: query
    latency percentiles against the target (p99 with its interval, ^ its upper bound), the bound, each point filled
    when it passed, crossed when not, the peak as a band. Right: offered and achieved load against the target."""
    figure, (axis, load) = plt.subplots(1, 2, figsize=size_inches, gridspec_kw={"width_ratios": (3, 2)},
                                        layout="constrained")
    series = {}
    for qps, run, *path in runs:
        run = run if isinstance(run, Run) else Run.from_attrs("", run)
        series.setdefault((path[0] if path else "", run.point.batch_size), []).append((qps, run.scenario, run))
    batches = [batch for _path, batch in series]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    finite, failed = [], []
    for index, (key, points) in enumerate(series.items()):
        name = "" if len(series) == 1 else " (" + ", ".join(  # the same batch size in several files: the file tells
            ([f"bs {key[1]}"] if key[1] else []) + ([Path(key[0]).name] if batches.count(key[1]) > 1 else [])) + ")"
        colour = colours[index % len(colours)]
        target = np.array([qps for qps, _scenario, _run in points])
        values = {q: np.array([_or_nan(shown.query_percentile(scenario, q)) for _qps, scenario, _run in points])
                  for q in (50, 90, 99)}
        for q, style in ((50, ":"), (90, "--"), (99, "-")):
            axis.plot(target, values[q], linestyle=style, color=colour, label=f"p{q}{name}")
        ends = np.array([[_or_nan(end) for end in shown.query_interval(scenario, 99)] for _q, scenario, _r in points])
        spans = np.nan_to_num([values[99] - ends[:, 0], ends[:, 1] - values[99]]).clip(0)
        axis.errorbar(target, values[99], yerr=spans, fmt="none", ecolor=colour, capsize=3)
        upper = np.array([_or_nan(shown.upper_bound(scenario)) for _qps, scenario, _run in points])
        if np.isfinite(upper).any():
            axis.plot(target, upper, linestyle="none", marker="^", color=colour, label=f"99% upper bound{name}")
        for (qps, scenario, run), p50, p99 in zip(points, values[50], values[99]):
            judged = shown.judged_latency(scenario)  # marked on the judged percentile, else the highest shown
            at = judged if judged is not None else p99 if np.isfinite(p99) else p50
            passed = run.verdict.valid and shown.within_bound(scenario) is not False
            if np.isfinite(at):
                finite.append(at)
                axis.plot([qps], [at], linestyle="none", marker="o", color=colour,
                          markerfacecolor=colour if passed else "white")
            if not passed:
                failed.append((qps, at))
        peaks = {(scenario.peak_qps, scenario.peak_qps_high) for _q, scenario, _r in points
                 if finite_number(scenario.peak_qps)}
        for peak, high in sorted(peaks):
            text = shown.peak_text(peak, high)
            if finite_number(high) and high > peak:
                axis.axvspan(peak, high, color=colour, alpha=0.15)
            axis.axvline(peak, color=colour, linestyle=":", label=f"peak {text}{name}")
        load.plot(target, [_or_nan(scenario.offered_qps) for _q, scenario, _r in points], marker="o", color=colour,
                  linestyle="none", label=f"offered (as scheduled){name}")
        load.plot(target, [_or_nan(scenario.achieved_qps) for _q, scenario, _r in points], marker="s",
                  color=colour, markerfacecolor="white", linestyle="none", label=f"achieved{name}")
    for bound in sorted({float(scenario.latency_bound) for points in series.values() for _q, scenario, _r in points
                         if finite_number(scenario.latency_bound)}):
        axis.axhline(bound, color="red", linestyle="--", label=f"bound {bound:g} ms")
        finite.append(bound)
    top = max(finite, default=1.0)
    if failed:
        axis.scatter([qps for qps, _at in failed], [at if np.isfinite(at) else top for _qps, at in failed],
                     marker="x", color="black", zorder=3, label="point failed (INVALID or over the bound)")
    if finite:
        axis.set_yscale("log")
        readable_log_axis(axis.yaxis, *axis.get_ylim(), "ms")
    everything = [qps for points in series.values() for qps, _s, _r in points]
    load.plot([min(everything), max(everything)], [min(everything), max(everything)], color="gray", linestyle="--",
              label="= target")
    axis.set(xlabel="target load (queries/s, all ranks)", ylabel="query latency (ms, from the scheduled arrival)",
             title="server: query latency against the target load")
    load.set(xlabel="target load (queries/s)", ylabel="queries/s, all ranks",
             title="offered (as scheduled) and achieved load")
    for axes in (axis, load):  # each legend beside its panel, off the data
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure
