"""The text the runner prints about its runs (the hardware line, each run's block, a failed size's line, a peak
search's closing line); mpirunner-report shows the same block from a file. A plain attribute dict is read as a Run.
"""
import math
import textwrap
from collections.abc import Mapping

import numpy as np

from mpirunner.runfile import shown
from mpirunner.runfile.shown import finite_number
from mpirunner.runfile.parts import Interval, LatencyStats, Summary
from mpirunner.runfile.run import Job, Run

TABLE_WIDTH = 160  # no printed line of the sweep table is longer: reasons and footnotes wrap


def as_run(run):
    """A Run, or a run group's attribute dict read as one."""
    return Run.from_attrs("", run) if isinstance(run, Mapping) else run


def text_value(value):
    """An attribute as one string: bytes decoded, lists joined with '; ', None as ''."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, (list, tuple, np.ndarray)):
        return "; ".join(text_value(item) for item in value)
    return str(value)


def estimate_text(value, interval, spec, ci_unavailable="", name=""):
    """`x [low, high]` from a stored 95% interval (`x ± h` when its two sides differ by under 10%), `x (interval
    n/a: reason)` without one (the reason: `name: ...` in ci_unavailable), `n/a` without the estimate."""
    if not finite_number(value):
        return "n/a"
    interval = interval or Interval()
    low, high = interval.low, interval.high
    if not (finite_number(low) and finite_number(high)) and finite_number(interval.half_width):
        return f"{value:{spec}} ± {interval.half_width:{spec}}"  # a file that stored the half-width alone
    if not (finite_number(low) and finite_number(high)):
        reasons = [part.split(": ", 1)[1] for part in text_value(ci_unavailable or "").split("; ")
                   if part.startswith(f"{name}: ")]
        return f"{value:{spec}} (interval n/a{': ' + reasons[0] if reasons else ''})"
    below, above = value - low, high - value
    if max(below, above) > 0 and abs(above - below) < 0.1 * max(below, above):
        return f"{value:{spec}} ± {max(below, above):{spec}}"
    return f"{value:{spec}} [{low:{spec}}, {high:{spec}}]"


def percentile_text(latency: LatencyStats, name, spec=".3f"):
    """A stored latency percentile ('p50', 'p99.9'), or `n/a` when the run had too few latencies for it."""
    from mpirunner.stats import PERCENTILES

    if not shown.enough(latency.count, PERCENTILES[name]):
        return "n/a"
    value = getattr(latency, name.replace(".", "_"))
    return f"{value:{spec}}" if finite_number(value) else "n/a"


def latency_estimate(summary: Summary, name):
    """A latency percentile with its interval, or n/a when the run had too few latencies for it."""
    if percentile_text(summary.latency, name) == "n/a":
        return "n/a"
    return estimate_text(getattr(summary.latency, name), getattr(summary.intervals, f"latency_{name}"), ".3f",
                         summary.ci_unavailable, name)


def throughput_estimate(summary: Summary, spec=".2f"):
    return estimate_text(summary.throughput, summary.intervals.throughput, spec, summary.ci_unavailable,
                         "throughput")


def verdict_text(run):
    """`VALID`, or `INVALID: <reason>; <reason>` (the validity verdict stored with the run)."""
    verdict = as_run(run).verdict
    return "VALID" if verdict.valid else "INVALID: " + "; ".join(text_value(reason) for reason in verdict.reasons)


def verdict_lines(run, width=160):
    """verdict_text on one line when it fits in `width`, else one reason per line (long ones wrapped)."""
    text = verdict_text(run)
    if len(text) <= width:
        return [text]
    head, *reasons = text.split("; ")
    return [line for index, reason in enumerate([head, *reasons])
            for line in textwrap.wrap(reason + (";" if index < len(reasons) else ""), width, break_on_hyphens=False,
                                      initial_indent="" if index == 0 else "  ", subsequent_indent="    ")]


def broken_roof_text(compute):
    """The remedy when the run beat its measured roof (`roof_broken`; older files: a utilisation above 1), else ''."""
    if compute is None:
        return ""
    if compute.roof_broken is True or compute.roof_broken == 1:
        share = compute.achieved_over_roof
    else:
        shares = [compute.utilization, compute.roof_utilization]
        share = max((value for value in shares if finite_number(value) and float(value) > 1.0), default=None)
        if share is None:
            return ""
    would_be = f" (utilisation would be {100 * float(share):.0f}%)" if finite_number(share) else ""
    return f"roof measured under load{would_be}: rerun --measure-peak on a quiet machine"


def roof_text(compute):
    """'utilisation X% of the binding roof, memory bandwidth: ...' from the roofline attributes (--measure-peak)."""
    intensity, bandwidth = compute.arithmetic_intensity_estimate, compute.peak_memory_bandwidth
    median = compute.peak_flops_median
    spread = f" (best batch; median {median / 1e9:.1f})" if finite_number(median) else ""
    return (f"utilisation {100 * compute.roof_utilization:.1f}% of the binding roof, {compute.binding_roof} "
            f"({compute.roof_flops / 1e9:.1f} GFLOP/s; intensity {intensity:.1f} FLOP/byte, an estimate; "
            f"roofs: GEMM {compute.peak_flops / 1e9:.1f} GFLOP/s{spread}, memory {bandwidth / 1e9:.1f} GB/s; "
            f"{100 * compute.utilization:.1f}% of the GEMM peak)")


def accuracy_lines(accuracy):
    """Accuracy on labelled real data, with what explains it (docs/inputs-and-precision.md); [] without it."""
    if accuracy is None or accuracy.top1 is None:
        return []
    samples = int(accuracy.samples)
    # The reference harness parses the first `accuracy: *(.*?)%`: that line carries top-1 alone, and the
    # top-5 line below does not contain "accuracy:" at all.
    lines = [f"accuracy: {100 * accuracy.top1:.2f}% (top-1 over {samples} samples of all ranks)",
             f"  top-5: {100 * accuracy.top5:.2f}%"]
    if accuracy.images is None:
        return lines
    images, classes = int(accuracy.images), int(accuracy.classes)
    counted = (f"the steps cycle through the images, so each was counted about {samples / images:.1f} times"
               if images and samples > images else "each image counted at most once")
    lines.append(f"  {images} images in {classes} class folder(s) loaded; {counted}")
    mapping = text_value(accuracy.class_map or "").split("; ")
    listed = ", ".join(mapping[:6]) + (f", ... ({len(mapping)} in all)" if len(mapping) > 6 else "")
    lines.append(f"  class folders, sorted by name, are the model's class indices: {listed}")
    weights = text_value(accuracy.weights if accuracy.weights is not None else "random")
    model_classes = int(accuracy.model_classes or 0)
    if weights == "random":
        chance = f": top-1 about {100 / model_classes:.2f}% over {model_classes} outputs" if model_classes else ""
        lines.append(f"  weights are random (seeded), so accuracy is at chance level{chance}; "
                     f"--weights torchvision or --weights FILE loads trained ones")
    else:
        lines.append(f"  weights: {weights}; folder i is scored against the model's output class i, so the "
                     f"folders must follow the training set's class order")
    return lines


def query_estimate(scenario, summary, q):
    """A query latency percentile (ms) with its interval, or n/a (too few queries for it: runfile/shown.py)."""
    value, name = shown.query_percentile(scenario, q), f"query_latency_p{q}"
    return "n/a" if value is None else estimate_text(value, getattr(scenario.intervals, name, None), ".3f",
                                                     summary.ci_unavailable, name)


def scenario_lines(run):
    """single-stream and server runs (docs/scenarios.md): query latency, and the load and bound of a server."""
    scenario, summary = shown.scenario_of(run), run.summary or Summary()
    if scenario is None:
        return []
    parts = [f"p{q} {query_estimate(scenario, summary, q)}" for q in (50, 90, 99)]
    mean = scenario.query_latency_mean if scenario.query_latency_mean is not None else float("nan")
    lines = [f"{scenario.scenario}: {scenario.queries} queries, query latency ms: {'  '.join(parts)}  mean {mean:.3f}"]
    if scenario.scenario == "server":
        wait = scenario.query_wait_mean if scenario.query_wait_mean is not None else float("nan")
        lines.append(f"load: target {scenario.target_qps:.1f} QPS, offered {scenario.offered_qps:.1f} (as scheduled), "
                     f"achieved {scenario.achieved_qps:.1f}, keep-up {scenario.keep_up:.2f}, "
                     f"{scenario.queries_unserved} unserved, mean wait {wait:.3f} ms, "
                     f"padding {100 * scenario.padding_share:.1f}%")
    if scenario.scenario == "server" and scenario.latency_bound is not None:
        judged, upper = shown.judged_latency(scenario), shown.upper_bound(scenario)
        over = (f"{scenario.queries_over_bound} queries ({100 * scenario.share_over_bound:.2f}%)"
                if scenario.queries_over_bound is not None else f"{100 * scenario.share_over_bound:.2f}%")
        lines.append(f"bound: p{scenario.bound_percentile:g} {f'{judged:.3f}' if judged is not None else 'n/a'} ms"
                     + (f" (99% upper bound {upper:.3f} ms)" if upper is not None else "")
                     + f" {'within' if shown.within_bound(scenario) else 'NOT within'} {scenario.latency_bound:g} ms; "
                     f"{over} over it")
    return lines


def hardware_line(job, rank_rows=()):
    """'device: cpu backend on <CPU model>, 2 thread(s) per rank, 1 rank(s) on vm', from a Job (or its dicts)."""
    if isinstance(job, Mapping):
        job = Job.from_attrs(job, rank_rows)
    backend = text_value(job.backend or "?")
    name = text_value(job.device_name or backend)
    parts = [f"device: {backend} backend on {name}"]
    if job.gpu_total_memory_bytes:
        parts[0] += f" ({int(job.gpu_total_memory_bytes) / 2**30:.1f} GiB)"
    threads = sorted({int(row.threads) for row in job.ranks if row.threads not in (None, "")})
    if threads:
        parts.append(f"{'-'.join(map(str, (threads[0], threads[-1]) if len(threads) > 1 else threads))} "
                     f"thread(s) per rank")
    hosts = sorted({text_value(row.host) for row in job.ranks} - {""})
    parts.append(f"{len(job.ranks)} rank(s) on {', '.join(hosts) or '?'}")
    return ", ".join(parts)


def format_failed_run(run):
    """The one line of a size that could not be measured (status 'failed'): which size, why."""
    run = as_run(run)
    reason = run.failure_reason if run.failure_reason is not None else "?"
    return (f"batch size {run.point.batch_size} failed: {reason}; "
            "the sweep stops here (larger sizes are not tried), the file keeps the sizes before it")


def peak_search_line(peak_qps, points, percentile, bound_ms, batch_size, peak_qps_high=None):
    """The runner's closing line of a --find-peak-qps search (its points are in the file already)."""
    where = f"{len(points)} points in the file as bs{batch_size:05d}-qps*"
    if peak_qps is None:
        return (f"peak search, batch {batch_size}: no load kept p{percentile:g} within {bound_ms:g} ms "
                f"(lowest tried {min(points):.1f} QPS); {where}")
    high = (f" (the peak lies in [{peak_qps:.1f}, {peak_qps_high:.1f}] QPS)"
            if finite_number(peak_qps_high) and peak_qps_high > peak_qps else "")
    return (f"peak search, batch {batch_size}: {peak_qps:.1f} QPS in total is the highest load with p{percentile:g} "
            f"within {bound_ms:g} ms{high}; {where}")


def _compute_line(compute):
    text = f"compute: {compute.achieved_flops / 1e9:.1f} GFLOP/s ({compute.flops_per_sample / 1e9:.3f} GFLOP/sample)"
    if broken_roof_text(compute):
        return text + ", " + broken_roof_text(compute)
    if compute.roof_utilization is not None:
        return text + ", " + roof_text(compute)
    if compute.utilization is not None:
        return text + (f", utilisation {100 * compute.utilization:.1f}% of the measured GEMM peak "
                       f"{compute.peak_flops / 1e9:.1f} GFLOP/s")
    return text


def format_run_block(run, world_size):
    """The runner's block for one run; its last two lines match the reference harness's regexes
    (`throughput: *(.*?) samples/sec`, `latency avg: *(.*?) ms`), except on IPU, where one line of the
    reference's own figures follows them (no regex of the harness matches it)."""
    run = as_run(run)
    point, summary, inputs, latency = run.point, run.summary, run.input, run.summary.latency
    queries = shown.scenario_of(run) is not None  # its latency is the queries'; the batches' is shown as such
    windows = f", {summary.windows} windows" if summary.windows else ""
    busy = inputs.device_busy_min
    busy = (f"{100 * busy:.1f}% (least busy rank)" if not math.isnan(busy)
            else "n/a (batch latency is not device time)")
    compiles = run.device.get("first_call_compiles", True)
    cv_max = summary.step_cv_rank_max if summary.step_cv_rank_max is not None else summary.step_cv
    lines = [
        "",
        f"== {point.model} batch {point.batch_size} x {point.device_iterations} device iterations, "
        f"{world_size} rank(s), {point.precision} ({point.dtype}), data {point.data}",
        f"{'batch latency' if queries else 'latency'} ms: min {latency.min:.3f}  "
        f"p50 {percentile_text(latency, 'p50')}  "
        f"p90 {percentile_text(latency, 'p90')}  p99 {percentile_text(latency, 'p99')}  max {latency.max:.3f}",
        f"{'compile' if compiles else 'first call'}: "
        f"{summary.compile_seconds_max:.2f} s   step cv: {100 * summary.step_cv:.1f}% "
        f"(max per rank {100 * cv_max:.1f}%)",
        f"input: host gap {100 * inputs.host_gap_max:.2f}% of the window (worst rank)   device busy {busy}"
        f"   pool {inputs.pool_steps} step(s), {inputs.pool_bytes / 2**20:.1f} MiB per rank",
        f"95% CI: throughput {throughput_estimate(summary)} samples/sec   "
        f"{'batch ' if queries else ''}p50 {latency_estimate(summary, 'p50')} ms   "
        f"{'batch ' if queries else ''}p99 {latency_estimate(summary, 'p99')} ms   "
        f"({summary.iterations} steps, {summary.timed_seconds:.2f} s{windows})",
        _compute_line(run.compute),
        *_ipu_cache_lines(run.device),
        *scenario_lines(run),
        *accuracy_lines(run.accuracy),
        *verdict_lines(run),
        f"throughput: {summary.throughput:.2f} samples/sec",
        f"latency avg: {shown.mean_latency(run):.3f} ms",
        *_reference_lines(run),
        *_sdk_era_lines(run),
    ]
    return "\n".join(lines)


def _ipu_cache_lines(device):
    """IPU runs whose cache the user did not name on the command line: say which folder was used and why."""
    if device.get("ipu_executable_cache_source") == "POPTORCH_CACHE_DIR":
        return [f"ipu cache: {device['ipu_executable_cache']} (from POPTORCH_CACHE_DIR)"]
    if not device.get("ipu_executable_cache_default"):
        return []
    return [f"ipu cache: {device['ipu_executable_cache']} (default: several instances per host and no "
            f"--model-cache-path; one instance compiles, the others load)"]


def _reference_lines(run):
    """IPU runs: the reference harness's own figures, after its two lines, worded so that its regexes cannot match."""
    device, reference = run.device, run.summary.throughput_reference
    if "ipu_latency_min_ms" not in device or reference is None:
        return []
    return [f"reference harness definition: {reference:.2f} samples/sec (per step, all "
            f"instances' samples over the slowest instance's step time), getLatency over all instances "
            f"min {device['ipu_latency_min_ms']:.3f} ms, max {device['ipu_latency_max_ms']:.3f} ms"]


def _sdk_era_lines(run):
    """IPU offline runs: the reference harness's closing lines of SDK 2.4 (32fc7bd inference/run_benchmark.py, its
    exact wording) and SDK 2.6's latency line, so a log scraper of either era parses this output."""
    device, point = run.device, run.point
    if "latency_reference_ms" not in device or "throughput_reference_min" not in device:
        return []
    dtype = str(point.dtype)
    dtype = dtype if dtype.startswith("torch.") else f"torch.{dtype}"
    latency = [device[f"latency_reference{part}_ms"] for part in ("_min", "_max", "")]
    low, high, mean = ["N/A" if value != value else value for value in latency]
    return [f"Throughput at bs={point.batch_size}, data_mode={point.data}, data_type={dtype}, "
            f"num_ipus={device['ipu_count']}, of {point.model}: min={device['throughput_reference_min']} imgs/s, "
            f"max={device['throughput_reference_max']} imgs/s, mean={run.summary.throughput_reference} imgs/s, "
            f"std={device['throughput_reference_std']} imgs/s.",
            f"Latency: min={low} ms, max={high} ms, mean={mean} ms.",
            f"latency: {mean} ms (mean over every call, the reference's formula)"]
