"""`mpirunner-report --plot` for server runs (a --find-peak-qps search or a set of server runs): query
latency percentiles against the target load, the latency bound and the peak found (docs/scenarios.md).
Runs of different files or batch sizes are separate curves (one search each), never one zig-zag line."""
from pathlib import Path

import numpy as np

from mpirunner.report.log_ticks import readable_log_axis

PERCENTILES = (50, 90, 99)
STYLES = {50: ":", 90: "--", 99: "-"}
SERIES_FILE = "_plot_file"  # the file a run came from, added to a copy of its attrs for the grouping


def server_runs(files):
    """(target QPS, run attrs) of every server run in the files, by load; [] when any run is not a server run.
    The target (not the realised Poisson count) is the axis a peak search moves along and reports."""
    runs = [{**data["runs"][name]["attrs"], SERIES_FILE: str(data.get("path", ""))}
            for data in files for name in data["runs"]]
    if not runs or any(attrs.get("scenario") != "server" for attrs in runs):
        return []
    return sorted(((float(attrs["target_qps"]), attrs) for attrs in runs), key=lambda pair: pair[0])


def _series(runs):
    """{(file, batch size): its runs by load}, in first-seen order, and a short name for each when there are several."""
    series = {}
    for qps, attrs in runs:
        series.setdefault((attrs.get(SERIES_FILE, ""), attrs.get("batch_size")), []).append((qps, attrs))
    if len(series) == 1:
        return series, {key: "" for key in series}
    batches = [batch for _, batch in series]
    names = {}
    for path, batch in series:
        parts = [f"bs {batch}"] if batch is not None else []
        if batches.count(batch) > 1:  # the same batch size in several files: the file tells them apart
            parts.append(Path(path).name)
        names[(path, batch)] = f" ({', '.join(parts)})"
    return series, names


def server_figure(plt, runs, size_inches):
    """Latency percentiles (ms, log y) against offered QPS; invalid points (unserved ones: infinite) are marked
    on the top edge of the finite values."""
    figure, axis = plt.subplots(figsize=size_inches)
    series, names = _series(runs)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    finite_top = 1.0
    for index, (key, points) in enumerate(series.items()):
        offered = np.array([qps for qps, _ in points])
        colour = colours[index % len(colours)] if len(series) > 1 else None
        for q in PERCENTILES:
            values = np.array([float(attrs.get(f"query_latency_p{q}", np.nan)) for _, attrs in points])
            finite = values[np.isfinite(values)]
            finite_top = max(finite_top, float(finite.max()) if finite.size else finite_top)
            axis.plot(offered, values, marker="o", linestyle=STYLES[q], color=colour, label=f"p{q}{names[key]}")
        peaks = {float(attrs["peak_qps"]) for _, attrs in points if np.isfinite(float(attrs.get("peak_qps", np.nan)))}
        for peak in sorted(peaks):
            axis.axvline(peak, color=colour or "green", linestyle=":", label=f"peak {peak:.1f} QPS{names[key]}")
    bounds = {float(attrs["latency_bound"]) for _, attrs in runs if "latency_bound" in attrs}
    for bound in sorted(bounds):
        axis.axhline(bound, color="red", linestyle="--", label=f"bound {bound:g} ms")
    failed = [qps for qps, attrs in runs if not attrs.get("valid", True)]
    if failed:
        axis.scatter(failed, [finite_top] * len(failed), marker="x", color="black", label="invalid point")
    axis.set_yscale("log")
    low, high = axis.get_ylim()
    readable_log_axis(axis.yaxis, low, high, "ms")
    axis.set_xlabel("target load (queries/s, all ranks)")
    axis.set_ylabel("query latency (ms, from the scheduled arrival)")
    axis.set_title("server: query latency against offered load")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize="small")
    figure.tight_layout()
    return figure
