"""python -m mpirunner.report: tables, terminal histograms, plots, CSV/JSON and regression checks from HDF5 files alone.

The HDF5 file is read on any machine: this module and the ones it imports use h5py and numpy
only (matplotlib for --plot), never torch or mpi4py. Every number shown is recomputed from the
raw per-step arrays with mpirunner.stats, so the report is also a check of the stored summary.

    mpirunner-report [report] FILE... [--ranks] [--histogram] [--plot PNG] [--csv PATH] [--json PATH]
    mpirunner-report compare BASE.h5 NEW.h5 [--threshold PERCENT]   # exit 1 on a regression
"""
import argparse
import csv
import json
import math
import sys
from pathlib import Path

import numpy as np

from mpirunner import SCHEMA
from mpirunner import stats
from mpirunner.errors import UsageError

EXIT_REGRESSION = 1
EXIT_USAGE = 2
SCHEMA_PREFIX = "mpirunner/"

# The summary fields every CSV/JSON row starts with, in this order; other run attributes follow.
ROW_FIELDS = ("file", "run", "batch_size", "samples_per_step", "device_iterations", "model", "precision",
              "dtype", "backend", "device_name", "world_size", "iterations", "throughput", "throughput_sum",
              "latency_min", "latency_mean", "latency_p50", "latency_p90", "latency_p95", "latency_p99",
              "latency_p99.9", "latency_max", "latency_std", "latency_cv", "step_cv", "compile_seconds_max",
              "valid", "validity_reason")


# ---------------------------------------------------------------------------------------- loading

def load(path):
    """Read one results file (read_results' dict plus 'path'), or raise UsageError with one clear line."""
    import h5py

    from mpirunner.results import read_results

    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if path.is_dir():
        raise UsageError(f"{path}: is a directory, not an mpirunner HDF5 file")
    try:
        with h5py.File(path, "r") as h5:
            schema = _text(h5.attrs.get("schema", ""))
    except OSError as error:
        raise UsageError(f"{path}: not a readable HDF5 file (truncated or another format): {_first_line(error)}")
    _check_schema(path, schema)
    try:
        data = read_results(path)
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise UsageError(f"{path}: damaged or incomplete mpirunner file: {_first_line(error)}")
    data["path"] = str(path)
    return data


def _check_schema(path, schema):
    if not schema.startswith(SCHEMA_PREFIX):
        raise UsageError(f"{path}: not an mpirunner results file (no '{SCHEMA}' schema attribute)")
    try:
        version = int(schema[len(SCHEMA_PREFIX):])
    except ValueError:
        raise UsageError(f"{path}: unknown schema '{schema}'; this report reads {SCHEMA}")
    if version > int(SCHEMA[len(SCHEMA_PREFIX):]):
        raise UsageError(f"{path}: schema {schema} is newer than {SCHEMA}, which this mpirunner reads; "
                         "upgrade mpirunner to report on it")


def _text(value):
    """An attribute as one string: bytes decoded, lists joined with '; ', None as ''."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, (list, tuple, np.ndarray)):
        return "; ".join(_text(item) for item in value)
    return str(value)


def _first_line(error):
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


# ------------------------------------------------------------------------- derived numbers

def finite_rows(array):
    """A [ranks, n] array (NaN-padded by the gather) -> one 1-D array of finite values per rank."""
    table = np.atleast_2d(np.asarray(array, dtype=np.float64))
    return [row[np.isfinite(row)] for row in table]


def _flat(array):
    rows = finite_rows(array) if array is not None and np.size(array) else []
    return np.concatenate(rows) if rows else np.zeros(0)


def run_latency(run):
    """All batch latencies of a run over every rank (s): batch_latency, else step_seconds per micro-batch."""
    latency = _flat(run.get("batch_latency"))
    if latency.size == 0:
        per_step = max(int(run["attrs"].get("device_iterations", 1) or 1), 1)
        latency = _flat(run.get("step_seconds")) / per_step
    return latency


def rank_throughputs(run):
    """Throughput of each rank (samples/s) over its own window, from step_start and step_seconds."""
    samples = run["attrs"].get("samples_per_step")
    if run.get("step_seconds") is None or run.get("step_start") is None or not samples:
        return np.zeros(0)
    out = []
    for start, seconds in zip(finite_rows(run["step_start"]), finite_rows(run["step_seconds"])):
        n = min(start.size, seconds.size)
        out.append(stats.per_rank_throughput(start[:n], seconds[:n], samples)[0] if n else float("nan"))
    return np.asarray(out, dtype=np.float64)


def summary_row(data, name):
    """One CSV/JSON row for run group `name`: its stored attributes, then the values recomputed from the arrays."""
    run = data["runs"][name]
    attrs = run["attrs"]
    root = data["attrs"]
    row = {"file": data["path"], "run": name}
    for key in ("backend", "device_name", "world_size"):
        row[key] = root.get(key, "")
    for key, value in attrs.items():
        row[key] = _scalar(value)
    if "dtype" not in row:
        row["dtype"] = root.get("dtype", "")
    samples = attrs.get("samples_per_step")
    if run.get("step_seconds") is not None and run.get("step_start") is not None and samples:
        starts, seconds = _flat(run["step_start"]), _flat(run["step_seconds"])
        if seconds.size and seconds.size == starts.size:
            skew = float(attrs.get("barrier_skew_seconds", 0.0) or 0.0)  # widens the window (stats.throughput)
            row["throughput"] = (stats.throughput(starts, seconds, samples, skew) if skew
                                 else stats.throughput(starts, seconds, samples))
            row["throughput_sum"] = float(np.nansum(rank_throughputs(run)))
            row["step_cv"] = stats.step_cv(seconds)
    latency = run_latency(run)
    if latency.size:
        row.update(stats.latency_summary(latency))
    if run.get("compile_seconds") is not None and np.size(run["compile_seconds"]):
        row["compile_seconds_max"] = float(np.nanmax(run["compile_seconds"]))
    row["validity_reason"] = _text(attrs.get("validity_reason", ""))
    row["valid"] = bool(attrs.get("valid", True))
    ordered = {key: row.get(key, "") for key in ROW_FIELDS}
    ordered.update({key: row[key] for key in sorted(row) if key not in ordered})
    return ordered


def _scalar(value):
    """An attribute as a CSV/JSON cell: numbers and strings stay, arrays and lists become '; '-joined text."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple, np.ndarray)):
        return _text([_scalar(item) for item in np.asarray(value).ravel().tolist()]) if np.size(value) else ""
    return value


def sorted_runs(data):
    """Run group names ordered by batch size (then name), the order of a sweep."""
    return sorted(data["runs"], key=lambda name: (data["runs"][name]["attrs"].get("batch_size", 0), name))


# ---------------------------------------------------------------------------------- text output

def headline(data):
    """The metadata of one file in two or three lines: what ran, where, when (fields a file lacks are left out)."""
    a = data["attrs"]
    first = data["runs"][sorted_runs(data)[0]]["attrs"] if data["runs"] else {}
    hosts = (", ".join(_text(a.get("hosts", "")).split("; ")) if _text(a.get("hosts", ""))
             else ", ".join(sorted({_text(r.get("host", "")) for r in data["ranks"]} - {""})) or "?")
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
                  f"git {_text(a['git_commit'])[:12]}" if a.get("git_commit") else "",
                  f"torch {a['torch_version']}" if a.get("torch_version") else ""]
    if any(provenance):
        lines.append("   " + ", ".join(part for part in provenance if part))
    return "\n".join(lines)


def _finite(row, *keys):
    """True when every key holds a finite number (older files lack newer fields)."""
    return all(isinstance(row.get(key), (int, float)) and not isinstance(row.get(key), bool)
               and math.isfinite(row[key]) for key in keys)


def interval_line(row):
    """'95% CI: throughput x ± y [low, high] samples/s, p50 x ± y ms, p99 x ± y ms' when the file stores intervals."""
    parts = []
    if _finite(row, "throughput", "throughput_ci95", "throughput_ci95_low", "throughput_ci95_high"):
        parts.append(f"throughput {row['throughput']:.2f} ± {row['throughput_ci95']:.2f} "
                     f"[{row['throughput_ci95_low']:.2f}, {row['throughput_ci95_high']:.2f}] samples/s")
    for name in ("p50", "p99"):
        key = f"latency_{name}_ci95"
        if _finite(row, f"latency_{name}", key, f"{key}_low", f"{key}_high"):
            parts.append(f"{name} {row[f'latency_{name}']:.3f} ± {row[key]:.3f} "
                         f"[{row[key + '_low']:.3f}, {row[key + '_high']:.3f}] ms")
    return "95% CI: " + ", ".join(parts) if parts else ""


def flops_line(row):
    """FLOPs per sample, achieved FLOP/s and utilisation of the measured peak, when the file stores them."""
    parts = []
    if _finite(row, "flops_per_sample"):
        parts.append(f"{row['flops_per_sample'] / 1e9:.3f} GFLOP/sample")
    if _finite(row, "achieved_flops"):
        parts.append(f"achieved {_si_flops(row['achieved_flops'])}/s")
    if _finite(row, "utilization", "peak_flops"):
        hosts = _text(row.get("utilization_hosts", "")).split("; ")
        shares = str(row.get("utilization_per_host", "")).split("; ")
        per_host = ", ".join(f"{host} {100 * float(share):.1f}%" for host, share in zip(hosts, shares)
                             if host and _is_number(share))
        parts.append(f"utilisation {100 * row['utilization']:.1f}% of peak {_si_flops(row['peak_flops'])}/s"
                     + (f" ({per_host})" if len(hosts) > 1 and per_host else ""))
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
                 ("max ms", "latency_max", 9, ".3f"), ("cv %", "step_cv", 6, ".1f"), ("valid", "valid", 5, ""))


def run_table(rows):
    """The per-run table of one file, then a line per run for invalid verdicts and extra (CI, FLOPs) fields."""
    header = "  ".join(f"{title:>{width}}" for title, _key, width, _spec in TABLE_COLUMNS)
    lines = [header]
    notes = []
    for row in rows:
        cells = []
        for _title, key, width, spec in TABLE_COLUMNS:
            value = row.get(key, "")
            value = 100 * value if key == "step_cv" and isinstance(value, (int, float)) else value
            value = ("yes" if value else "NO") if key == "valid" else value
            try:
                cells.append(f"{value:>{width}{spec}}")
            except (ValueError, TypeError):
                cells.append(f"{str(value) or '-':>{width}}")
        lines.append("  ".join(cells))
        if not row["valid"] or row["validity_reason"]:
            verdict = "valid" if row["valid"] else "INVALID"
            notes.append(f"   batch {row['batch_size']}: {verdict}: {row['validity_reason'] or 'no reason stored'}")
        for extra in (interval_line(row), flops_line(row)):
            if extra:
                notes.append(f"   batch {row['batch_size']}: {extra}")
    return "\n".join(lines + notes)


def rank_table(data, name):
    """A row per rank of one run: where it ran and how fast, the slowest rank marked, so a straggler stands out."""
    run = data["runs"][name]
    throughputs = rank_throughputs(run)
    steps = finite_rows(run["step_seconds"]) if run.get("step_seconds") is not None else []
    latencies = finite_rows(run["batch_latency"]) if run.get("batch_latency") is not None else []
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
        lines.append(f"   {index:>4}  {_text(info.get('host', '?')) or '?':<16} {numa!s:>4}  "
                     f"{_text(info.get('cpus', '-')) or '-':<14} {rate:>12.2f}  {versus}  {step_ms:>11.3f}"
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


# ------------------------------------------------------------------------------- file output

def write_rows(rows, path, kind):
    """Write the summary rows as CSV or JSON to PATH ('-': stdout). Non-finite numbers become empty / null."""
    columns = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    clean = [{key: _cell(row.get(key, "")) for key in columns} for row in rows]
    handle = sys.stdout if str(path) == "-" else None
    try:
        if handle is None:
            handle = open(path, "w", newline="", encoding="utf-8")
        if kind == "csv":
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in clean)
        else:
            json.dump(clean, handle, indent=1)
            handle.write("\n")
    except OSError as error:
        raise UsageError(f"cannot write --{kind} {path}: {error.strerror or error}")
    finally:
        if handle is not None and handle is not sys.stdout:
            handle.close()


def _cell(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ------------------------------------------------------------------------------------- commands

def report(args):
    """`report FILE...`: headline and table per file; --ranks, --histogram, --plot, --csv, --json on request.

    With `--csv -` or `--json -` stdout carries only that data (for pipes); the tables are left out.
    """
    if args.csv == "-" and args.json == "-":
        raise UsageError("only one of --csv and --json can write to stdout ('-')")
    files = [load(path) for path in args.files]
    if args.plot:
        from mpirunner.report_plot import check_plot_available

        check_plot_available(args.plot)
    to_stdout = "-" in (args.csv, args.json)
    all_rows = []
    for data in files:
        names = sorted_runs(data)
        rows = [summary_row(data, name) for name in names]
        all_rows.extend(rows)
        if not to_stdout:
            print(_file_text(data, names, rows, args))
    if args.csv:
        write_rows(all_rows, args.csv, "csv")
    if args.json:
        write_rows(all_rows, args.json, "json")
    if args.plot:
        from mpirunner.report_plot import plot

        written = plot(files, args.plot, per_rank=args.ranks)
        print(f"plot written to {written}", file=sys.stderr if to_stdout else sys.stdout)
    return 0


def _file_text(data, names, rows, args):
    parts = [headline(data)]
    if not rows:
        parts.append("   (no runs stored)")
    else:
        parts.append(run_table(rows))
    for name in names:
        if args.ranks:
            parts.append(rank_table(data, name))
        if args.histogram:
            parts.append(f"   batch {data['runs'][name]['attrs'].get('batch_size', name)}:")
            parts.append(terminal_histogram(run_latency(data["runs"][name])))
    return "\n".join(parts) + "\n"


def compare(args):
    """`compare BASE NEW`: match runs by batch size, print ratios and verdicts; 1 when any run regressed."""
    from mpirunner.report_compare import compare_files, format_comparison

    if args.threshold < 0:
        raise UsageError(f"--threshold must be a percentage >= 0, got {args.threshold}")
    base, new = load(args.base), load(args.new)
    results = compare_files(base, new, args.threshold / 100.0, seed=args.seed)
    if not any("time_ratio" in result for result in results):
        raise UsageError(f"nothing to compare: {args.base} and {args.new} have no batch size in common")
    print(format_comparison(base, new, results, args.threshold))
    return EXIT_REGRESSION if any(result["verdict"] == "regressed" for result in results) else 0


def build_parsers():
    """(report parser, compare parser); `report` is also what runs when the first word is a file."""
    report_parser = argparse.ArgumentParser(
        prog="mpirunner-report [report]",
        description="Tables, latency histograms, plots and CSV/JSON from mpirunner HDF5 files (no torch or MPI needed). "
                    "See also: mpirunner-report compare BASE.h5 NEW.h5.")
    report_parser.add_argument("files", nargs="+", metavar="FILE", help="mpirunner HDF5 result files")
    report_parser.add_argument("--ranks", action="store_true",
                               help="a row per rank (host, NUMA node, cpus, throughput, median latency); per-rank colours in --plot")
    report_parser.add_argument("--histogram", action="store_true", help="draw each run's latency histogram in the terminal (log bins)")
    report_parser.add_argument("--plot", metavar="PATH.png",
                               help="write a PNG: one run -> latency histogram; a sweep -> throughput vs batch size and vs p99 latency")
    report_parser.add_argument("--csv", metavar="PATH", help="one row per run with every summary field ('-': stdout)")
    report_parser.add_argument("--json", metavar="PATH", help="the same rows as a JSON list ('-': stdout)")

    compare_parser = argparse.ArgumentParser(
        prog="mpirunner-report compare",
        description="Compare NEW against BASE run by run (matched on batch size). Exit status 1 when NEW is slower "
                    "than BASE by more than --threshold beyond noise (bootstrap interval of per-sample step time).")
    compare_parser.add_argument("base", metavar="BASE.h5")
    compare_parser.add_argument("new", metavar="NEW.h5")
    compare_parser.add_argument("--threshold", type=float, default=5.0, metavar="PERCENT",
                                help="slow-down that counts as a regression (default: 5)")
    compare_parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling (default: 0)")
    return report_parser, compare_parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    report_parser, compare_parser = build_parsers()
    try:
        if argv and argv[0] == "compare":
            return compare(compare_parser.parse_args(argv[1:]))
        if argv and argv[0] == "report":
            argv = argv[1:]
        return report(report_parser.parse_args(argv))
    except UsageError as error:
        print(f"mpirunner-report: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
