"""PNG figures for `mpirunner-report --plot` (matplotlib, Agg backend; the `plot` extra).

One run: its latency histogram on a log-x axis (log-spaced bins) with p50 and p99 marked, one
colour per rank with --ranks. Several runs (a sweep, or several files): throughput vs batch size
and throughput vs p99 latency, the latency-throughput curve used to pick a batch size. Several
server runs: query latency percentiles against the offered load (load_plot.py).
"""
from pathlib import Path

import numpy as np

from mpirunner.errors import UsageError
from mpirunner.report.load_plot import server_figure, server_runs
from mpirunner.report.log_ticks import batch_size_axis, log_bin_edges, readable_log_axis
from mpirunner.report.rows import finite_rows, first_run_attrs, run_latency, sorted_runs, summary_row

FIGURE_SIZE_INCHES = (12.0, 5.0)
DPI = 100  # -> 1200 x 500 pixels


def check_plot_available(path, option="--plot"):
    """Raise UsageError before any work when matplotlib is missing or the folder of `option`'s file does not exist."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError(f"{option} needs matplotlib: pip install 'mpirunner[plot]'")
    folder = Path(path).parent
    if not folder.is_dir():
        raise UsageError(f"cannot write {option} {path}: folder {folder} does not exist")


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed); imported on call, as heavy imports are."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(files, path, per_rank=False):
    """Write the figure that fits the files (one run -> histogram, several -> sweep curves); return the path."""
    runs = [(data, name) for data in files for name in sorted_runs(data)]
    if not runs:
        raise UsageError("--plot: the files hold no runs")
    plt = pyplot()
    served = server_runs(files)
    if len(served) > 1:  # a --find-peak-qps search or a set of server runs
        figure = server_figure(plt, served, FIGURE_SIZE_INCHES)
    elif len(runs) == 1:
        figure = _histogram_figure(plt, *runs[0], per_rank=per_rank)
    else:
        figure = _sweep_figure(plt, files)
    path = Path(path)
    try:
        figure.savefig(path, format="png", dpi=DPI)
    except OSError as error:
        raise UsageError(f"cannot write --plot {path}: {error.strerror or error}")
    finally:
        plt.close(figure)
    return path


def _title(data, run_attrs):
    a = data["attrs"]
    return (f"{run_attrs.get('model', '?')}, batch {run_attrs.get('batch_size', '?')}, "
            f"{run_attrs.get('precision', '?')} ({run_attrs.get('dtype', a.get('dtype', '?'))}), "
            f"{a.get('backend', '?')} on {a.get('device_name', '?')}, {a.get('world_size', '?')} rank(s)")


def _histogram_figure(plt, data, name, per_rank):
    run = data["runs"][name]
    latency = run_latency(run)
    latency = latency[latency > 0]
    figure, axes = plt.subplots(figsize=FIGURE_SIZE_INCHES)
    if latency.size == 0:
        axes.text(0.5, 0.5, "no latencies stored", ha="center", transform=axes.transAxes)
        return figure
    edges_ms = log_bin_edges(latency) * 1e3  # bins from the sample count: 20 samples -> 5 bars, not 2
    rows = finite_rows(run.get("batch_latency"))
    if per_rank and len(rows) > 1:
        colours = plt.get_cmap("tab10" if len(rows) <= 10 else "viridis")
        per_rank_ms = [row[row > 0] * 1e3 for row in rows]
        axes.hist(per_rank_ms, bins=edges_ms, stacked=True, label=[f"rank {index}" for index in range(len(rows))],
                  color=[colours(index % 10 if len(rows) <= 10 else index / (len(rows) - 1)) for index in range(len(rows))])
    else:
        axes.hist(latency * 1e3, bins=edges_ms, color="tab:blue", label="all ranks")
    for label, q, style in (("p50", 50, "--"), ("p99", 99, ":")):
        value_ms = float(np.percentile(latency, q) * 1e3)
        axes.axvline(value_ms, color="black", linestyle=style, linewidth=1.5, label=f"{label} {value_ms:.3f} ms")
    axes.set_xscale("log")
    readable_log_axis(axes.xaxis, edges_ms[0], edges_ms[-1], "ms")
    axes.set_xlabel("batch latency (ms, log scale)")
    axes.set_ylabel("micro-batches (count)")
    axes.set_title(f"Latency histogram: {_title(data, run['attrs'])}, {latency.size} micro-batches")
    axes.legend(loc="best", fontsize="small")
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    return figure


def _errors(rows, key):
    """[[below], [above]] error-bar lengths from each row's stored 95% interval (0 where it has none)."""
    below, above = [], []
    for row in rows:
        value, low, high = row.get(key), row.get(f"{key}_ci95_low"), row.get(f"{key}_ci95_high")
        finite = all(isinstance(v, (int, float)) and np.isfinite(v) for v in (value, low, high))
        below.append(max(value - low, 0.0) if finite else 0.0)
        above.append(max(high - value, 0.0) if finite else 0.0)
    return [below, above]


def _points(axes, xs, ys, xerr, yerr, rows, color):
    """Each run as a marker with its interval as error bars: filled when VALID, hollow when INVALID."""
    for index, row in enumerate(rows):
        valid = bool(row.get("valid", True))
        axes.errorbar([xs[index]], [ys[index]], fmt="o", color=color, capsize=3, elinewidth=1,
                      markerfacecolor=color if valid else "none",
                      xerr=None if xerr is None else [[xerr[0][index]], [xerr[1][index]]],
                      yerr=[[yerr[0][index]], [yerr[1][index]]])


def _sweep_title_and_labels(files):
    """(figure title, {path: legend label}): the title holds what every file shares (model, precision, device,
    ranks); each file's label is its name plus what sets it apart, so no file's settings stand for all of them."""
    described = []
    for data in files:
        attrs, root = first_run_attrs(data), data["attrs"]
        described.append({"model": str(attrs.get("model", "?")), "precision": str(attrs.get("precision", "?")),
                          "device": f"{root.get('backend', '?')} on {root.get('device_name', '?')}",
                          "ranks": f"{root.get('world_size', '?')} rank(s)"})
    shared = [key for key in described[0] if all(item[key] == described[0][key] for item in described)]
    title = "Sweep: " + (", ".join(described[0][key] for key in shared) if shared else f"{len(files)} files")
    labels = {}
    for data, item in zip(files, described):
        own = [item[key] for key in item if key not in shared]
        name = Path(data["path"]).name
        if sum(Path(other["path"]).name == name for other in files) > 1:
            name = str(data["path"])  # two files of the same name in different folders
        labels[data["path"]] = name + (f" ({', '.join(own)})" if own else "")
    return title, labels


def _sweep_figure(plt, files):
    figure, (by_batch, by_latency) = plt.subplots(1, 2, figsize=FIGURE_SIZE_INCHES)
    several = len(files) > 1
    title, labels = _sweep_title_and_labels(files)
    for data in files:
        rows = [summary_row(data, name) for name in sorted_runs(data)]
        rows = [row for row in rows if isinstance(row.get("throughput"), float) and np.isfinite(row["throughput"])]
        if not rows:
            continue
        batch = [row["batch_size"] for row in rows]
        rate = [row["throughput"] for row in rows]
        p99 = [row.get("latency_p99", float("nan")) for row in rows]
        label = labels[data["path"]] if several else "throughput (all ranks)"
        line, = by_batch.plot(batch, rate, label=label)
        by_latency.plot(p99, rate, color=line.get_color(), label=label if several else None)
        _points(by_batch, batch, rate, None, _errors(rows, "throughput"), rows, line.get_color())
        _points(by_latency, p99, rate, _errors(rows, "latency_p99"), _errors(rows, "throughput"), rows,
                line.get_color())
        for size, x, y in zip(batch, p99, rate):
            by_latency.annotate(f"bs {size}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize="x-small")
    if any(not row.get("valid", True) for data in files for row in
           (data["runs"][name]["attrs"] for name in data["runs"])):
        for axes in (by_batch, by_latency):  # one legend entry says what a hollow marker means
            axes.plot([], [], linestyle="none", marker="o", markerfacecolor="none", color="gray",
                      label="INVALID run (hollow)")
    sizes = sorted({row_size for data in files for row_size in
                    (data["runs"][name]["attrs"].get("batch_size") for name in data["runs"]) if row_size})
    batch_size_axis(by_batch, sizes)
    by_batch.margins(x=0.08)
    by_latency.margins(0.1)
    figure.suptitle(title)
    by_batch.set_xlabel("batch size (samples per micro-batch, log2 scale)")
    by_batch.set_ylabel("throughput (samples/s)")
    by_batch.set_title("Throughput vs batch size")
    by_latency.set_xlabel("p99 batch latency (ms)")
    by_latency.set_ylabel("throughput (samples/s)")
    by_latency.set_title("Throughput vs p99 latency")
    for axes in (by_batch, by_latency):
        axes.grid(True, which="both", alpha=0.3)
        if several or axes is by_batch:
            axes.legend(fontsize="small")
    figure.tight_layout()
    return figure
