"""Every line mpirunner prints about results: the runner's per-run block and sweep table, and mpirunner-report's text.

The runner (job.py) and mpirunner-report share this one module, so a run reads the same while it
runs and afterwards. Everything works on run attributes as stored in a run group (flat dicts).
"""
import math

import numpy as np

from mpirunner import stats
from mpirunner.report.accuracy_text import accuracy_lines
from mpirunner.report.finite import finite_number
from mpirunner.report.scenario_text import scenario_lines
from mpirunner.report.rows import finite_rows, first_run_attrs, rank_throughputs, run_latency, text_value


# ----------------------------------------------------------------------------- the runner's lines

def verdict_text(attrs):
    """`VALID`, or `INVALID: <reason>; <reason>` (the validity verdict stored with the run)."""
    reasons = attrs.get("validity_reason")
    if reasons is None or isinstance(reasons, (str, bytes)):
        reasons = [reasons] if reasons else []  # one reason, or '' as stored for none
    return "VALID" if attrs["valid"] else "INVALID: " + "; ".join(text_value(reason) for reason in reasons)


def estimate_text(attrs, key, spec, missing_name=None):
    """`x [low, high]` from the stored 95% interval (`x ± h` when its two sides differ by under 10%);
    `x (interval n/a: reason)` when the run stored none; `n/a (...)` when the estimate itself needs more samples."""
    value = attrs.get(key)
    if not _finite(attrs, key):
        return "n/a"
    low, high = attrs.get(f"{key}_ci95_low"), attrs.get(f"{key}_ci95_high")
    if not _finite(attrs, f"{key}_ci95_low", f"{key}_ci95_high") and _finite(attrs, f"{key}_ci95"):
        return f"{value:{spec}} ± {attrs[f'{key}_ci95']:{spec}}"  # a file that stored the half-width alone
    if not _finite(attrs, f"{key}_ci95_low", f"{key}_ci95_high"):
        reasons = [part.split(": ", 1)[1] for part in text_value(attrs.get("ci_unavailable", "")).split("; ")
                   if part.startswith(f"{missing_name or key}: ")]
        return f"{value:{spec}} (interval n/a{': ' + reasons[0] if reasons else ''})"
    below, above = value - low, high - value
    if max(below, above) > 0 and abs(above - below) < 0.1 * max(below, above):
        return f"{value:{spec}} ± {max(below, above):{spec}}"
    return f"{value:{spec}} [{low:{spec}}, {high:{spec}}]"


def percentile_text(attrs, name, spec=".3f"):
    """A stored latency percentile, or `n/a` when the run had too few latencies for it (p99 needs 100)."""
    count = attrs.get("latency_count")
    if isinstance(count, (int, np.integer)) and not stats.enough_for_percentile(int(count), stats.PERCENTILES[name]):
        return "n/a"
    value = attrs.get(f"latency_{name}")
    return f"{value:{spec}}" if _finite(attrs, f"latency_{name}") else "n/a"


def format_run_block(attrs, world_size):
    """The runner's block for one run; its last two lines match the reference harness's regexes
    (`throughput: *(.*?) samples/sec`, `latency avg: *(.*?) ms`), except on IPU, where one line of the
    reference's own figures follows them (no regex of the harness matches it)."""
    windows = f", {attrs['windows']} windows" if attrs.get("windows") else ""
    busy = attrs["device_busy_min"]
    busy = (f"{100 * busy:.1f}% (least busy rank)" if not math.isnan(busy)
            else "n/a (batch latency is not device time)")
    compute = (f"compute: {attrs['achieved_flops'] / 1e9:.1f} GFLOP/s "
               f"({attrs['flops_per_sample'] / 1e9:.3f} GFLOP/sample)")
    if broken_roof_text(attrs):
        compute += ", " + broken_roof_text(attrs)
    elif "roof_utilization" in attrs:
        compute += ", " + roof_text(attrs)
    elif "utilization" in attrs:
        compute += (f", utilisation {100 * attrs['utilization']:.1f}% of the measured GEMM peak "
                    f"{attrs['peak_flops'] / 1e9:.1f} GFLOP/s")
    lines = [
        "",
        f"== {attrs['model']} batch {attrs['batch_size']} x {attrs['device_iterations']} device iterations, "
        f"{world_size} rank(s), {attrs['precision']} ({attrs['dtype']}), data {attrs['data']}",
        f"latency ms: min {attrs['latency_min']:.3f}  p50 {percentile_text(attrs, 'p50')}  "
        f"p90 {percentile_text(attrs, 'p90')}  p99 {percentile_text(attrs, 'p99')}  max {attrs['latency_max']:.3f}",
        f"{'compile' if attrs.get('first_call_compiles', True) else 'first call'}: "
        f"{attrs['compile_seconds_max']:.2f} s   step cv: {100 * attrs['step_cv']:.1f}% "
        f"(max per rank {100 * attrs.get('step_cv_rank_max', attrs['step_cv']):.1f}%)",
        f"input: host gap {100 * attrs['host_gap_max']:.2f}% of the window (worst rank)   device busy {busy}"
        f"   pool {attrs['input_pool_steps']} step(s), {attrs['input_pool_bytes'] / 2**20:.1f} MiB per rank",
        f"95% CI: throughput {estimate_text(attrs, 'throughput', '.2f')} samples/sec   "
        f"p50 {_latency_estimate(attrs, 'p50')} ms   p99 {_latency_estimate(attrs, 'p99')} ms   "
        f"({attrs['iterations']} steps, {attrs['timed_seconds']:.2f} s{windows})",
        compute,
        *_ipu_cache_lines(attrs),
        *scenario_lines(attrs, estimate_text),
        *accuracy_lines(attrs),
        *verdict_lines(attrs),
        f"throughput: {attrs['throughput']:.2f} samples/sec",
        f"latency avg: {attrs['latency_mean']:.3f} ms",
        *_reference_lines(attrs),
        *_sdk_era_lines(attrs),
    ]
    return "\n".join(lines)


def verdict_lines(attrs, width=160):
    """verdict_text on one line when it fits in `width`, else one reason per line (long ones wrapped)."""
    import textwrap

    text = verdict_text(attrs)
    if len(text) <= width:
        return [text]
    head, *reasons = text.split("; ")
    return [line for index, reason in enumerate([head, *reasons])
            for line in textwrap.wrap(reason + (";" if index < len(reasons) else ""), width, break_on_hyphens=False,
                                      initial_indent="" if index == 0 else "  ", subsequent_indent="    ")]


def broken_roof_text(attrs):
    """'roof measured under load (utilisation would be 130%): rerun --measure-peak on a quiet machine' when
    the run beat its measured roof (`roof_broken`; in older files, a stored utilisation above 1), else ''."""
    if attrs.get("roof_broken") is True or attrs.get("roof_broken") == 1:
        share = attrs.get("achieved_over_roof")
    else:
        shares = [attrs.get(key) for key in ("utilization", "roof_utilization")]
        share = max((value for value in shares if finite_number(value) and float(value) > 1.0), default=None)
        if share is None:
            return ""
    would_be = f" (utilisation would be {100 * float(share):.0f}%)" if finite_number(share) else ""
    return f"roof measured under load{would_be}: rerun --measure-peak on a quiet machine"


def roof_text(attrs):
    """'utilisation X% of the binding roof, memory bandwidth: ...' from the roofline attributes (--measure-peak)."""
    intensity, bandwidth = attrs["arithmetic_intensity_estimate"], attrs["peak_memory_bandwidth"]
    median = attrs.get("peak_flops_median")
    spread = f" (best batch; median {median / 1e9:.1f})" if finite_number(median) else ""
    return (f"utilisation {100 * attrs['roof_utilization']:.1f}% of the binding roof, {attrs['binding_roof']} "
            f"({attrs['roof_flops'] / 1e9:.1f} GFLOP/s; intensity {intensity:.1f} FLOP/byte, an estimate; "
            f"roofs: GEMM {attrs['peak_flops'] / 1e9:.1f} GFLOP/s{spread}, memory {bandwidth / 1e9:.1f} GB/s; "
            f"{100 * attrs['utilization']:.1f}% of the GEMM peak)")


def _latency_estimate(attrs, name):
    """A latency percentile with its interval, or n/a when the run had too few latencies for it."""
    if percentile_text(attrs, name) == "n/a":
        return "n/a"
    return estimate_text(attrs, f"latency_{name}", ".3f", missing_name=name)


def _ipu_cache_lines(attrs):
    """IPU runs whose cache the user did not name on the command line: say which folder was used and why."""
    if attrs.get("ipu_executable_cache_source") == "POPTORCH_CACHE_DIR":
        return [f"ipu cache: {attrs['ipu_executable_cache']} (from POPTORCH_CACHE_DIR)"]
    if not attrs.get("ipu_executable_cache_default"):
        return []
    return [f"ipu cache: {attrs['ipu_executable_cache']} (default: several instances per host and no "
            f"--model-cache-path; one instance compiles, the others load)"]


def _reference_lines(attrs):
    """IPU runs: the reference harness's own figures, AFTER its two lines and worded so that neither of its
    regexes (which take the first match) can match here."""
    if "ipu_latency_min_ms" not in attrs or "throughput_reference" not in attrs:
        return []
    return [f"reference harness definition: {attrs['throughput_reference']:.2f} samples/sec (per step, all "
            f"instances' samples over the slowest instance's step time), getLatency over all instances "
            f"min {attrs['ipu_latency_min_ms']:.3f} ms, max {attrs['ipu_latency_max_ms']:.3f} ms"]


def _sdk_era_lines(attrs):
    """IPU offline runs: the reference harness's closing lines of SDK 2.4 (32fc7bd inference/run_benchmark.py,
    its exact wording, numbers as Python prints them; N/A latencies with synthetic data) and SDK 2.6's latency
    line (its benchmarks.yml regex `latency: *(.*?) ms`), so a log scraper of either era parses this output."""
    if "latency_reference_ms" not in attrs or "throughput_reference_min" not in attrs:
        return []
    dtype = str(attrs["dtype"])
    dtype = dtype if dtype.startswith("torch.") else f"torch.{dtype}"
    latency = [attrs[f"latency_reference{part}_ms"] for part in ("_min", "_max", "")]
    low, high, mean = ["N/A" if value != value else value for value in latency]
    return [f"Throughput at bs={attrs['batch_size']}, data_mode={attrs['data']}, data_type={dtype}, "
            f"num_ipus={attrs['ipu_count']}, of {attrs['model']}: min={attrs['throughput_reference_min']} imgs/s, "
            f"max={attrs['throughput_reference_max']} imgs/s, mean={attrs['throughput_reference']} imgs/s, "
            f"std={attrs['throughput_reference_std']} imgs/s.",
            f"Latency: min={low} ms, max={high} ms, mean={mean} ms.",
            f"latency: {mean} ms (mean over every call, the reference's formula)"]


def format_sweep_table(runs_attrs):
    """The sweep summary: one row per batch size, every estimate as `x ± y` (95% CI), then the verdict."""
    lines = ["",
             " batch  samples/step    throughput (samples/s)  sum of ranks        lat p50 ms        lat p99 ms  "
             "max cv%  verdict"]
    for a in runs_attrs:
        throughput = estimate_text(a, "throughput", ".2f")
        p50, p99 = _latency_estimate(a, "p50"), _latency_estimate(a, "p99")
        lines.append(f"{a['batch_size']:6d}  {a['samples_per_step']:12d}  {throughput:>24s}  {a['throughput_sum']:12.2f}"
                     f"  {p50:>16s}  {p99:>16s}  {100 * a.get('step_cv_rank_max', a['step_cv']):7.1f}  {verdict_text(a)}")
    return "\n".join(lines)


# ------------------------------------------------------------------------- mpirunner-report's text

def headline(data):
    """The metadata of one file in two or three lines: what ran, where, when (fields a file lacks are left out)."""
    a = data["attrs"]
    first = first_run_attrs(data)
    hosts = (", ".join(text_value(a.get("hosts", "")).split("; ")) if text_value(a.get("hosts", ""))
             else ", ".join(sorted({text_value(r.get("host", "")) for r in data["ranks"]} - {""})) or "?")
    world = a.get("world_size", len(data["ranks"]))
    image_size = first.get("image_size", a.get("image_size"))
    what = [f"model {first.get('model', '?')}",
            f"precision {first.get('precision', '?')} ({first.get('dtype', a.get('dtype', '?'))})",
            f"data {first['data']}" if first.get("data") else "",
            f"image {image_size} px" if image_size else ""]
    where = [f"backend {a.get('backend', '?')} on {a.get('device_name', '?')}", f"{world} rank(s) on {hosts}",
             f"launcher {a['launcher']}" if a.get("launcher") else "", f"created {a.get('created', '?')}"]
    lines = [f"== {data['path']}", "   " + ", ".join(part for part in what if part),
             "   " + ", ".join(part for part in where if part)]
    provenance = [f"SLURM job {a['slurm_job_id']}" if a.get("slurm_job_id") else "",
                  f"mpirunner {a['mpirunner_version']}" if a.get("mpirunner_version") else "",
                  f"git {text_value(a['git_commit'])[:12]}" if a.get("git_commit") else "",
                  f"torch {a['torch_version']}" if a.get("torch_version") else ""]
    if any(provenance):
        lines.append("   " + ", ".join(part for part in provenance if part))
    return "\n".join(lines)


def _finite(row, *keys):
    """True when every key holds a finite number (older files lack newer fields)."""
    return all(finite_number(row.get(key)) for key in keys)


def interval_line(row):
    """'95% CI: throughput x [low, high] samples/s, p50 x [low, high] ms, p99 ...' (`x ± h` when symmetric),
    with n/a and the reason for what the run could not give."""
    if not any(key.endswith("_ci95_low") for key in row) and not row.get("ci_unavailable"):
        return ""  # an older file without intervals
    parts = [f"throughput {estimate_text(row, 'throughput', '.2f')} samples/s"]
    parts += [f"{name} {_latency_estimate(row, name)} ms" for name in ("p50", "p99")]
    return "95% CI: " + ", ".join(parts)


def flops_line(row):
    """FLOPs per sample, achieved FLOP/s and utilisation of the measured peak, when the file stores them."""
    parts = []
    if _finite(row, "flops_per_sample"):
        parts.append(f"{row['flops_per_sample'] / 1e9:.3f} GFLOP/sample")
    if _finite(row, "achieved_flops"):
        parts.append(f"achieved {_si_flops(row['achieved_flops'])}/s")
    if broken_roof_text(row):
        return ", ".join(parts + [broken_roof_text(row)])
    if _finite(row, "utilization", "peak_flops"):
        hosts = text_value(row.get("utilization_hosts", "")).split("; ")
        shares = str(row.get("utilization_per_host", "")).split("; ")
        per_host = ", ".join(f"{host} {100 * float(share):.1f}%" for host, share in zip(hosts, shares)
                             if host and _is_number(share))
        parts.append(f"utilisation {100 * row['utilization']:.1f}% of peak {_si_flops(row['peak_flops'])}/s"
                     + (f" ({per_host})" if len(hosts) > 1 and per_host else ""))
    if _finite(row, "roof_utilization", "roof_flops", "arithmetic_intensity_estimate", "peak_memory_bandwidth"):
        parts.append(roof_text(row))
    return ", ".join(parts)


def _si_flops(value):
    """1.5e12 -> '1.500 TFLOP', 3.2e9 -> '3.200 GFLOP': the largest prefix that keeps the number >= 1."""
    for prefix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if abs(value) >= scale:
            return f"{value / scale:.3f} {prefix}FLOP"
    return f"{value:.0f} FLOP"


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


TABLE_COLUMNS = (("batch", "batch_size", 6, ""), ("samples/step", "samples_per_step", 12, ""),
                 ("throughput/s", "throughput", 12, ".2f"), ("sum of ranks", "throughput_sum", 12, ".2f"),
                 ("min ms", "latency_min", 9, ".3f"), ("mean ms", "latency_mean", 9, ".3f"),
                 ("p50 ms", "latency_p50", 9, ".3f"), ("p90 ms", "latency_p90", 9, ".3f"),
                 ("p99 ms", "latency_p99", 9, ".3f"), ("p99.9 ms", "latency_p99.9", 9, ".3f"),
                 ("max ms", "latency_max", 9, ".3f"), ("max cv %", "step_cv_rank_max", 8, ".1f"),
                 ("valid", "valid", 5, ""))


def run_table(rows):
    """The per-run table of one file, then a line per run for invalid verdicts and extra (CI, FLOPs) fields."""
    header = "  ".join(f"{title:>{width}}" for title, _key, width, _spec in TABLE_COLUMNS)
    lines = [header]
    notes = []
    for row in rows:
        cells = []
        for _title, key, width, spec in TABLE_COLUMNS:
            value = row.get(key, "")
            value = 100 * value if key == "step_cv_rank_max" and isinstance(value, (int, float)) else value
            if key.startswith("latency_p") and key[len("latency_"):] in stats.PERCENTILES:
                value = percentile_text(row, key[len("latency_"):], spec)
            value = ("yes" if value else "NO") if key == "valid" else value
            try:
                cells.append(f"{value:>{width}{spec}}")
            except (ValueError, TypeError):
                cells.append(f"{str(value) or '-':>{width}}")
        lines.append("  ".join(cells))
        if not row["valid"] or row["validity_reason"]:
            verdict = "valid" if row["valid"] else "INVALID"
            notes.append(f"   batch {row['batch_size']}: {verdict}: {row['validity_reason'] or 'no reason stored'}")
        for extra in (interval_line(row), flops_line(row), *accuracy_lines(row)[:1]):
            if extra:
                notes.append(f"   batch {row['batch_size']}: {extra}")
    return "\n".join(lines + notes)


def rank_table(data, name):
    """A row per rank of one run: where it ran and how fast, the slowest rank marked, so a straggler stands out."""
    run = data["runs"][name]
    throughputs = rank_throughputs(run)
    steps, latencies = finite_rows(run.get("step_seconds")), finite_rows(run.get("batch_latency"))
    by_rank = {int(row.get("rank", index)): row for index, row in enumerate(data["ranks"])}
    median = float(np.nanmedian(throughputs)) if throughputs.size else float("nan")
    slowest = int(np.nanargmin(throughputs)) if throughputs.size > 1 and np.isfinite(throughputs).any() else None
    lines = [f"   batch {run['attrs'].get('batch_size', name)}, per rank:",
             f"   {'rank':>4}  {'host':<16} {'numa':>4}  {'cpus':<14} {'throughput/s':>12}  {'vs median':>9}"
             f"  {'step p50 ms':>11}  {'lat p50 ms':>10}  {'lat p99 ms':>10}"]
    for index in range(max(len(throughputs), len(steps))):
        info = by_rank.get(index, {})
        numa = info.get("numa_node", "")
        numa = "-" if numa in ("", None) or (isinstance(numa, int) and numa < 0) else numa
        rate = throughputs[index] if index < len(throughputs) else float("nan")
        step_ms = np.median(steps[index]) * 1e3 if index < len(steps) and steps[index].size else float("nan")
        lat = latencies[index] if index < len(latencies) else np.zeros(0)
        p50, p99 = (np.percentile(lat, 50) * 1e3, np.percentile(lat, 99) * 1e3) if lat.size else (float("nan"),) * 2
        versus = f"{100 * (rate / median - 1):+8.1f}%" if median and np.isfinite(median) else f"{'-':>9}"
        mark = "  <- slowest" if index == slowest else ""
        lines.append(f"   {index:>4}  {text_value(info.get('host', '?')) or '?':<16} {numa!s:>4}  "
                     f"{text_value(info.get('cpus', '-')) or '-':<14} {rate:>12.2f}  {versus}  {step_ms:>11.3f}"
                     f"  {p50:>10.3f}  {p99:>10.3f}{mark}")
    return "\n".join(lines)


def terminal_histogram(latency_seconds, width=50, max_rows=40):
    """Latency histogram as text: log-spaced bins (ms), a bar per bin, its count, and p50/p90/p99/p99.9 markers."""
    values = np.asarray(latency_seconds, dtype=np.float64)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return "   (no latencies)"
    decades = max(np.log10(values.max() / values.min()), 1e-9)
    counts, edges = stats.log_histogram(values, bins_per_decade=int(max(1, min(20, max_rows // max(decades, 1)))))
    markers = {name: np.percentile(values, q) for name, q in
               (("p50", 50), ("p90", 90), ("p99", 99), ("p99.9", 99.9))}
    tallest = max(int(counts.max()), 1)
    lines = [f"   latency histogram, {values.size} micro-batches, log bins (ms):"]
    index = 0
    while index < len(counts):
        empty_end = index
        while empty_end < len(counts) and counts[empty_end] == 0:
            empty_end += 1
        # a long gap of empty bins is one row, so a few outliers do not scroll the screen
        following = empty_end if empty_end - index >= 3 else index + 1
        low, high = edges[index], edges[following]
        last = following == len(counts)
        inside = [name for name, value in markers.items() if low <= value < high or (last and value == high)]
        count = int(counts[index:following].sum())
        bar = "#" * max(1, int(round(width * count / tallest))) if count else ""
        mark = ("  <- " + ", ".join(inside)) if inside else ""
        gap = f"  ({following - index} empty bins)" if following - index > 1 else ""
        lines.append(f"   {low * 1e3:>10.3f} - {high * 1e3:<10.3f} |{bar:<{width}} {count:>7d}{gap}{mark}")
        index = following
    return "\n".join(lines)


def file_text(data, names, rows, ranks=False, histogram=False):
    """Everything `mpirunner-report FILE` prints for one file: headline, run table, --ranks and --histogram."""
    parts = [headline(data)]
    if not rows:
        parts.append("   (no runs stored)")
    else:
        parts.append(run_table(rows))
    for name in names:
        if ranks:
            parts.append(rank_table(data, name))
        if histogram:
            parts.append(f"   batch {data['runs'][name]['attrs'].get('batch_size', name)}:")
            parts.append(terminal_histogram(run_latency(data["runs"][name])))
    return "\n".join(parts) + "\n"

