"""What mpirunner-report prints: one file's headline, run table, --ranks and --histogram; compare's table. A run's own
words (verdict, intervals, percentiles) come from mpirunner.runfile.block, the one place that words a run."""
import numpy as np

from mpirunner import stats
from mpirunner.report.figures import latency_bins
from mpirunner.report.rows import (finite_number, finite_rows, first_attrs, number_text, rank_throughputs, run_latency,
                                   text_value)
from mpirunner.report.variation import CONFIDENCE
from mpirunner.runfile.block import accuracy_lines, broken_roof_text, estimate_text, percentile_text, roof_text
from mpirunner.runfile.parts import LatencyStats, Summary
from mpirunner.runfile.shown import peak_text


def headline(job):
    """The metadata of one file in two or three lines: what ran, where, when (fields a file lacks are left out)."""
    a, first = job.attrs(), first_attrs(job)
    hosts = (", ".join(text_value(list(job.hosts)).split("; ")) if job.hosts
             else ", ".join(sorted({text_value(rank.host) for rank in job.ranks} - {""})) or "?")
    image_size = first.get("image_size", a.get("image_size"))
    what = [f"model {first.get('model', '?')}",
            f"precision {first.get('precision', '?')} ({first.get('dtype', a.get('dtype', '?'))})",
            f"data {first['data']}" if first.get("data") else "",
            f"image {image_size} px" if image_size else ""]
    where = [f"backend {a.get('backend', '?')} on {a.get('device_name', '?')}",
             f"{a.get('world_size', len(job.ranks))} rank(s) on {hosts}",
             f"launcher {job.launcher}" if job.launcher else "", f"created {a.get('created', '?')}"]
    provenance = [f"SLURM job {job.slurm_job_id}" if job.slurm_job_id else "",
                  f"mpirunner {job.versions['mpirunner']}" if job.versions.get("mpirunner") else "",
                  f"git {text_value(job.git_commit)[:12]}" if job.git_commit else "",
                  f"torch {job.versions['torch']}" if job.versions.get("torch") else ""]
    return "\n".join([f"== {job.path}"] + ["   " + ", ".join(filter(None, parts))
                                           for parts in (what, where, provenance) if any(parts)])


def _finite(row, *keys):
    """True when every key holds a finite number (older files lack newer fields)."""
    return all(finite_number(row.get(key)) for key in keys)


def _latency(row):
    """A row's recomputed latency statistics as the typed LatencyStats block.percentile_text judges."""
    return LatencyStats(count=row.get("latency_count"), **{name.replace(".", "_"): row.get(f"latency_{name}")
                                                            for name in stats.PERCENTILES})


def _latency_estimate(row, name):
    """A latency percentile with its stored interval, or n/a when the run had too few latencies for it."""
    if percentile_text(_latency(row), name) == "n/a":
        return "n/a"
    summary = row.run.summary or Summary()
    return estimate_text(row.get(f"latency_{name}"), getattr(summary.intervals, f"latency_{name}"), ".3f",
                         summary.ci_unavailable, name)


def interval_line(row):
    """'95% CI: throughput x [low, high] samples/s, p50 ..., p99 ...', n/a with its reason."""
    if not any(key.endswith("_ci95_low") for key in row) and not row.get("ci_unavailable"):
        return ""  # an older file without intervals
    summary = row.run.summary or Summary()
    throughput = estimate_text(row.get("throughput"), summary.intervals.throughput, ".2f", summary.ci_unavailable,
                               "throughput")
    parts = [f"throughput {throughput} samples/s"]
    parts += [f"{name} {_latency_estimate(row, name)} ms" for name in ("p50", "p99")]
    return "95% CI: " + ", ".join(parts)


def flops_line(row):
    """FLOPs per sample, achieved FLOP/s and utilisation of the measured peak, when the file stores them."""
    parts, compute = [], row.run.compute
    if _finite(row, "flops_per_sample"):
        parts.append(f"{row['flops_per_sample'] / 1e9:.3f} GFLOP/sample")
    if _finite(row, "achieved_flops"):
        parts.append(f"achieved {_si_flops(row['achieved_flops'])}/s")
    if broken_roof_text(compute):
        return ", ".join(parts + [broken_roof_text(compute)])
    if _finite(row, "utilization", "peak_flops"):
        hosts = text_value(row.get("utilization_hosts", "")).split("; ")
        shares = str(row.get("utilization_per_host", "")).split("; ")
        per_host = ", ".join(f"{host} {100 * float(share):.1f}%" for host, share in zip(hosts, shares)
                             if host and _is_number(share))
        parts.append(f"utilisation {100 * row['utilization']:.1f}% of peak {_si_flops(row['peak_flops'])}/s"
                     + (f" ({per_host})" if len(hosts) > 1 and per_host else ""))
    if _finite(row, "roof_utilization", "roof_flops", "arithmetic_intensity_estimate", "peak_memory_bandwidth"):
        parts.append(roof_text(compute))
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


# (title, row key, width, spec) of a single-stream or server run: the loads, the achieved rate, query latency.
SCENARIO_COLUMNS = (("batch", "batch_size", 5, ""), ("target QPS", "target_qps", 10, ".1f"),
                    ("offered QPS", "offered_qps", 11, ".1f"), ("QPS", "achieved_qps", 7, ".1f"),
                    ("samples/s", "throughput", 10, ".2f"), ("query p50 ms", "query_latency_p50", 12, ".3f"),
                    ("query p90 ms", "query_latency_p90", 12, ".3f"), ("query p99 ms", "query_latency_p99", 12, ".3f"),
                    ("query mean ms", "query_latency_mean", 13, ".3f"), ("bound ms", "latency_bound", 8, "g"),
                    ("upper ms", "bound_latency_upper", 9, ".3f"))


def scenario_table(rows):
    """Single-stream and server runs: a row per point, then its intervals, batch latency and verdict; the peak."""
    lines = ["  ".join(f"{title:>{width}}" for title, _key, width, _spec in SCENARIO_COLUMNS) + "  within  valid"]
    notes = []
    for row in rows:
        within = row.get("within_bound")
        lines.append("  ".join(number_text(row.get(key), spec, width,
                                           "n/a" if key.startswith(("query_latency_p", "bound_l")) else "-")
                               for _title, key, width, spec in SCENARIO_COLUMNS)
                     + f"  {'-' if within is None else 'yes' if within else 'NO':>6}"
                     + f"  {'yes' if row['valid'] else 'NO':>5}")
        target = row.get("target_qps")  # a peak search's points share their batch size: 'batch 2 at 40.0 QPS'
        label = f"batch {row['batch_size']}" + (f" at {target:.1f} QPS" if finite_number(target) else "")
        summary = row.run.summary or Summary()
        names = {q: f"query_latency_p{q}" for q in (50, 99)}
        queries = [f"p{q} " + (estimate_text(row[name], getattr(row.run.scenario.intervals, name), ".3f",
                                             summary.ci_unavailable, name)
                               if finite_number(row.get(name)) else "n/a") for q, name in names.items()]
        count = number_text(row.get("queries"), ".0f", 0, "?")
        notes.append(f"   {label}: {count} queries, 95% CI: query {', '.join(queries)} ms")
        notes.append(f"   {label}: batch latency ms: p50 {percentile_text(_latency(row), 'p50')}  p99 "
                     f"{percentile_text(_latency(row), 'p99')}  mean {number_text(row.get('latency_mean'), '.3f')}")
        notes += _verdict_note(label, row)
    peaks = {peak_text(row.run.scenario.peak_qps, row.run.scenario.peak_qps_high) for row in rows} - {""}
    notes += [f"   peak search: {'the peak lies in ' if peak.startswith('[') else 'peak '}{peak} (the highest "
              f"load that passed: valid, its percentile's upper bound within the bound)" for peak in sorted(peaks)]
    return "\n".join(lines + notes)


def _verdict_note(label, row):
    """['   batch 4: INVALID: reasons'] for an INVALID run or one with reasons stored, else []."""
    if row["valid"] and not row["validity_reason"]:
        return []
    return [f"   {label}: {'valid' if row['valid'] else 'INVALID'}: {row['validity_reason'] or 'no reason stored'}"]


def offline_table(rows):
    """The table of offline runs, then a line per run for invalid verdicts and extra (CI, FLOPs) fields."""
    lines, notes = ["  ".join(f"{title:>{width}}" for title, _key, width, _spec in TABLE_COLUMNS)], []
    for row in rows:
        cells = []
        for _title, key, width, spec in TABLE_COLUMNS:
            value = row.get(key, "")
            value = 100 * value if key == "step_cv_rank_max" and isinstance(value, (int, float)) else value
            if key.startswith("latency_p") and key[len("latency_"):] in stats.PERCENTILES:
                value = percentile_text(_latency(row), key[len("latency_"):], spec)
            value = ("yes" if value else "NO") if key == "valid" else value
            try:
                cells.append(f"{value:>{width}{spec}}")
            except (ValueError, TypeError):
                cells.append(f"{str(value) or '-':>{width}}")
        lines.append("  ".join(cells))
        notes += _verdict_note(f"batch {row['batch_size']}", row)
        notes += [f"   batch {row['batch_size']}: {extra}"
                  for extra in (interval_line(row), flops_line(row), *accuracy_lines(row.run.accuracy)[:1]) if extra]
    return "\n".join(lines + notes)


def rank_table(job, run):
    """A row per rank of one run: where it ran and how fast, the slowest rank marked, so a straggler stands out."""
    throughputs = rank_throughputs(run)
    steps, latencies = finite_rows(run.arrays.step_seconds), finite_rows(run.arrays.batch_latency)
    by_rank = {int(row.rank): row for row in job.ranks}
    median = float(np.nanmedian(throughputs)) if throughputs.size else float("nan")
    slowest = int(np.nanargmin(throughputs)) if throughputs.size > 1 and np.isfinite(throughputs).any() else None
    lines = [f"   batch {run.point.batch_size}, per rank:",
             f"   {'rank':>4}  {'host':<16} {'numa':>4}  {'cpus':<14} {'throughput/s':>12}  {'vs median':>9}"
             f"  {'step p50 ms':>11}  {'lat p50 ms':>10}  {'lat p99 ms':>10}"]
    for index in range(max(len(throughputs), len(steps))):
        info = by_rank.get(index, {})
        numa = info.get("numa_node", "")
        numa = "-" if numa in ("", None) or (isinstance(numa, int) and numa < 0) else numa
        rate = throughputs[index] if index < len(throughputs) else float("nan")
        step_ms = np.median(steps[index]) * 1e3 if index < len(steps) and steps[index].size else float("nan")
        lat = latencies[index] if index < len(latencies) else np.zeros(0)
        p50, p99 = (np.percentile(lat, q) * 1e3 if stats.enough_for_percentile(lat.size, q) else float("nan")
                    for q in (50, 99))
        versus = f"{100 * (rate / median - 1):+8.1f}%" if median and np.isfinite(median) else f"{'-':>9}"
        mark = "  <- slowest" if index == slowest else ""
        lines.append(f"   {index:>4}  {text_value(info.get('host', '?')) or '?':<16} {numa!s:>4}  "
                     f"{text_value(info.get('cpus', '-')) or '-':<14} {rate:>12.2f}  {versus}  {step_ms:>11.3f}"
                     f"  {number_text(p50, '.3f', 10, 'n/a')}  {number_text(p99, '.3f', 10, 'n/a')}{mark}")
    return "\n".join(lines)


def terminal_histogram(latency_seconds, width=50, max_rows=40):
    """Latency histogram as text: log-spaced bins (ms), a bar per bin, its count, and p50/p90/p99/p99.9 markers."""
    values, counts, edges = latency_bins(latency_seconds, max_rows)
    if values.size == 0:
        return "   (no latencies)"
    markers = {name: np.percentile(values, q) for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("p99.9", 99.9))
               if stats.enough_for_percentile(values.size, q)}  # the one percentile rule (runfile/shown.py)
    tallest = max(int(counts.max()), 1)
    lines = [f"   latency histogram, {values.size} micro-batches, log bins (ms):"]
    index = 0
    while index < len(counts):
        filled = np.flatnonzero(counts[index:])
        empty = int(filled[0]) if filled.size else len(counts) - index  # empty bins from here on
        # a long gap of empty bins is one row, so a few outliers do not scroll the screen
        following = index + empty if empty >= 3 else index + 1
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


def file_text(job, runs, rows, ranks=False, histogram=False):
    """Everything `mpirunner-report FILE` prints for one file: headline, run table, --ranks and --histogram."""
    offline = [row for row in rows if not row.get("scenario")]  # then single-stream and server runs
    scenario = [row for row in rows if row.get("scenario")]
    parts = [headline(job)] + ([offline_table(offline)] if offline else [])
    parts += ([scenario_table(scenario)] if scenario else []) + ([] if rows else ["   (no runs stored)"])
    for run in runs:
        if ranks:
            parts.append(rank_table(job, run))
        if histogram:
            parts += [f"   batch {run.point.batch_size}:", terminal_histogram(run_latency(run))]
    return "\n".join(parts) + "\n"


def failed_runs_text(job):
    """One line per failed size of a file ('' when none), for the report and compare."""
    return "\n".join(f"   batch {run.point.batch_size}: FAILED, not measured: {text_value(run.failure_reason)} "
                     f"({job.path})" for run in job.failed_runs)


SHOWN = {"regressed": "REGRESSED", "invalid-new": "INVALID (new)", "excluded-invalid": "excluded (base INVALID)",
         "different-configuration": "DIFFERENT CONFIGURATION (not judged)"}


def interval_text(pair):
    """'ratio [low, high]': the between-run interval when a spread was measured, else the bootstrap one."""
    if not finite_number(pair.ratio):
        return "n/a"
    low, high = (pair.between_low, pair.between_high) if finite_number(pair.between_low) else (pair.low, pair.high)
    return f"{pair.ratio:.3f} [{low:.3f}, {high:.3f}]"


def side_text(name, datas):
    """'base: a.h5' or 'base (3 runs): a.h5, b.h5, c.h5'."""
    paths = ", ".join(str(job.path) for job in datas)
    return f"{name}:{' ' * (5 - len(name))}{paths}" if len(datas) == 1 else f"{name} ({len(datas)} runs): {paths}"


def format_comparison(bases, news, results, threshold_percent, noise_floor_percent):
    """The comparison as a table (ratios NEW/BASE, the one that decided, the verdict), notes under it."""
    lines = [side_text("base", bases), side_text("new", news),
             f"regressed = the quantity that decided is more than {threshold_percent:g}% worse in NEW, its "
             f"{100 * CONFIDENCE:.0f}% bootstrap interval lies wholly on the worse side of 1, and the change is beyond "
             f"the run-to-run noise: the spread between the files of each side (two or more runs on a side), else "
             f"the {noise_floor_percent:g}% noise floor",
             f"{'batch':>6}  {'base/s':>10}  {'new/s':>10}  {'thr new/base':>12}  {'p50 ratio':>9}  {'p99 ratio':>9}"
             f"  {'ratio [95% interval]':>26}  {'decided by':<24}  verdict"]
    notes = []
    for result in results:
        verdict = result["regression_verdict"]
        if "pair" not in result and "differences" not in result:
            lines.append(f"{result['batch_size']!s:>6}  {'':>10}  {'':>10}  {'':>12}  {'':>9}  {'':>9}  {'':>26}  "
                         f"{'':<24}  {verdict}")
            continue
        start = (f"{result['batch_size']!s:>6}  {result['base_throughput']:>9.2f}{' ' if result['base_valid'] else '*'}"
                 f"  {result['new_throughput']:>9.2f}{' ' if result['new_valid'] else '*'}"
                 f"  {result['throughput_ratio']:>11.3f}x")
        if "differences" in result:
            lines.append(f"{start}  {'':>9}  {'':>9}  {'':>26}  {'':<24}  {SHOWN[verdict]}")
            notes.extend(f"   batch {result['batch_size']}: configuration differs: {key}: {base_value} (base) vs "
                         f"{new_value} (new)" for key, base_value, new_value in result["differences"])
            continue
        pair = result["pair"]
        ratios = "  ".join(f"{result[key]:>8.3f}x" if finite_number(result[key]) else f"{'n/a':>9}"
                           for key in ("p50_ratio", "p99_ratio"))
        lines.append(f"{start}  {ratios}  {interval_text(pair):>26}  {pair.decided_by:<24}  "
                     f"{SHOWN.get(pair.status, pair.status)}" + (f" ({pair.reason})" if pair.reason else ""))
        if pair.note:
            notes.append(f"   batch {result['batch_size']}: {pair.note}")
        if finite_number(pair.between_low) and finite_number(pair.low):
            notes.append(f"   batch {result['batch_size']}: the interval shown is the between-run one; the steps' "
                         f"own (bootstrap, pooled over the files) is [{pair.low:.3f}, {pair.high:.3f}]")
    if any(not r.get("base_valid", True) or not r.get("new_valid", True) for r in results):
        lines.append("   * INVALID run: left out of the verdict unless --include-invalid")
    lines.extend(notes)
    lines.append(comparison_conclusion(results))
    return "\n".join(lines)


def comparison_conclusion(results):
    """The last line of a comparison: REGRESSION, different configurations, INVALID, or no regression."""
    def sizes(status):
        return ", ".join(str(r["batch_size"]) for r in results if r["regression_verdict"] == status)

    if sizes("regressed"):
        return f"REGRESSION at batch size {sizes('regressed')}"
    if sizes("different-configuration"):
        keys = sorted({key for r in results for key, _base, _new in r.get("differences", ())})
        return (f"DIFFERENT CONFIGURATIONS at batch size {sizes('different-configuration')} (not judged: "
                f"{', '.join(keys)} {'differs' if len(keys) == 1 else 'differ'})")
    if sizes("invalid-new"):
        return (f"INVALID: new run INVALID at batch size {sizes('invalid-new')} "
                "(not judged; --include-invalid to compare)")
    if not any(r["regression_verdict"] in ("improved", "same", "regressed") for r in results):
        return "INVALID: no pair could be judged (every pair excluded)"
    return "no regression"
