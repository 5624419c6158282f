"""`mpirunner-report --plot` for server runs (a --find-peak-qps search or a set of server runs): query
latency percentiles against the target load, the latency bound and the peak found (docs/scenarios.md)."""
import numpy as np

from mpirunner.report.log_ticks import readable_log_axis

PERCENTILES = (50, 90, 99)


def server_runs(files):
    """(target QPS, run attrs) of every server run in the files, by load; [] when any run is not a server run.
    The target (not the realised Poisson count) is the axis a peak search moves along and reports."""
    runs = [data["runs"][name]["attrs"] for data in files for name in data["runs"]]
    if not runs or any(attrs.get("scenario") != "server" for attrs in runs):
        return []
    return sorted(((float(attrs["target_qps"]), attrs) for attrs in runs), key=lambda pair: pair[0])


def server_figure(plt, runs, size_inches):
    """Latency percentiles (ms, log y) against offered QPS; unserved-heavy points (infinite) sit on the top edge."""
    figure, axis = plt.subplots(figsize=size_inches)
    offered = np.array([qps for qps, _ in runs])
    finite_top = 1.0
    for q in PERCENTILES:
        values = np.array([float(attrs.get(f"query_latency_p{q}", np.nan)) for _, attrs in runs])
        finite = values[np.isfinite(values)]
        finite_top = max(finite_top, float(finite.max()) if finite.size else finite_top)
        axis.plot(offered, values, marker="o", label=f"p{q}")
    bounds = {float(attrs["latency_bound"]) for _, attrs in runs if "latency_bound" in attrs}
    for bound in bounds:
        axis.axhline(bound, color="red", linestyle="--", label=f"bound {bound:g} ms")
    peaks = {float(attrs["peak_qps"]) for _, attrs in runs if np.isfinite(float(attrs.get("peak_qps", np.nan)))}
    for peak in peaks:
        axis.axvline(peak, color="green", linestyle=":", label=f"peak {peak:.1f} QPS")
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
    axis.legend()
    figure.tight_layout()
    return figure
