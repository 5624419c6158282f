"""MLPerf LoadGen and mpirunner side by side: the same model, the same loads, the same latency bound.

The model is torchvision resnet18 (random weights, seed 0) at --image-size, float32, eval, one torch
thread, batch-1 queries. LoadGen (the `mlcommons-loadgen` package, `pip install -e .[loadgen]`) drives
it through a Python SUT in a child process of this script; mpirunner drives it through its own CLI
(`python -m mpirunner ... --threads 1`, one rank). Each measurement alternates the tools, LoadGen first
in odd rounds and mpirunner first in even ones:

  1. single-stream, --duration seconds each;
  2. server at --loads (fractions of the single-stream capacity 1000 / p50 ms of round 1, or --qps);
  3. a peak search for p99 within --bound-ms: LoadGen's FindPeakPerformance mode and
     `mpirunner --find-peak-qps`, both from the same start load; LoadGen's points hold as many queries
     as mpirunner's (--point-queries, 1836 for a p99), its bisection stops at 1 QPS.

The SUT runs the model on LoadGen's issuing thread (--sut inline, the default: one thread as in
mpirunner) or hands each sample to a worker thread through a queue (--sut worker); the hand-off
(issue_queries called -> worker starts the model) is measured in the worker mode. Every number of the
tables comes from the raw per-query timestamps of each tool (LoadGen's trace, mpirunner's queries/)
next to what the tool itself reported and judged.

    python benchmarks/loadgen_side_by_side.py      # everything: ~16 min on one core (5 + 11, see RESULTS.md)
    python benchmarks/loadgen_side_by_side.py --rounds 1 --duration 4 --skip-peak   # ~1.5 min
    # as in RESULTS.md, on a reserved core (benchmarks/on_reserved_core.sh), in parts of 6, 11 and 2 minutes:
    ... --rounds 2 --duration 15 --qps 38,57,76 --skip-peak
    ... --rounds 2 --start-qps 38 --skip-single-stream --skip-server --skip-handoff
    ... --rounds 1 --duration 15 --qps 76 --seeds 1,2,3 --skip-single-stream --skip-peak --skip-handoff
"""
import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
WARMUP_QUERIES = 30  # as the LoadGen child's (loadgen_sut.WARMUP_QUERIES)
RUN_TIMEOUT_SECONDS = 600  # one tool's run or search; past it the script stops with a traceback


# ----------------------------------------------------------------------------------- the drivers

def run_loadgen(options, folder, **spec):
    spec = {"image_size": options.image_size, "seed": 0, "sut": options.sut, "bound_ms": options.bound_ms,
            "min_queries": 0, "expected_ms": 5.0, "peak_decimals": 0, **spec,
            "out": str(Path(folder) / "loadgen.json")}
    command = [sys.executable, str(Path(__file__).with_name("loadgen_sut.py")), json.dumps(spec)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS)
    if result.returncode != 0:
        raise SystemExit(f"LoadGen child failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(Path(spec["out"]).read_text())


def run_mpirunner(options, folder, args):
    """`python -m mpirunner` with this model; every run group's attrs and queries from its HDF5 file."""
    import h5py

    output = Path(folder) / "mpirunner.h5"
    command = [sys.executable, "-m", "mpirunner", "--model", "resnet18", "--image-size", str(options.image_size),
               "--device", "cpu", "--threads", "1", "--warmup-iterations", str(WARMUP_QUERIES),
               "--no-progress", "--log-level", "info", "--output", str(output), *map(str, args)]
    command += [] if "--seed" in args else ["--seed", "0"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS)
    if not output.exists():
        raise SystemExit(f"mpirunner failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-3000:]}")
    runs = []
    with h5py.File(output) as h5:
        for name, group in h5["runs"].items():
            attrs = {key: (value.tolist() if hasattr(value, "tolist") else value) for key, value in group.attrs.items()}
            found = {key: group["queries"][key][()] for key in group["queries"]} if "queries" in group else {}
            batch = group["batch_latency"][()].ravel() if "batch_latency" in group else np.array([])
            runs.append({"name": name, "attrs": attrs, "queries": found, "batch_latency": batch})
    runs = sorted(runs, key=lambda run: run["attrs"].get("peak_point", 0))
    for run in runs:
        run["output"] = result.stdout + result.stderr
    return runs


# ----------------------------------------------------------------------------------- statistics

def nearest_rank(values, q):
    """LoadGen's percentile: the sorted value at index floor(n * q / 100) (results.cc)."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    return float(ordered[min(ordered.size - 1, int(ordered.size * (q / 100.0)))]) if ordered.size else math.nan


def interpolated(values, q):
    from mpirunner.scenarios import latency_percentile  # mpirunner's own percentile
    return latency_percentile(values, q)


def upper_bound(values, q):
    from mpirunner.stats import percentile_upper_bound  # 99% confidence: LoadGen's early-stopping test
    return percentile_upper_bound(values, q)


def point_queries():
    """mpirunner's peak-search point size for a p99 (4 x stats.minimum_count(99) = 1836 at usual loads)."""
    from mpirunner.scenarios import point_queries as sized
    return int(sized(99.0))


def first(attrs, *names, default=math.nan):
    """The first of `names` the attrs hold (a name of an older file next)."""
    return next((attrs[name] for name in names if name in attrs), default)


def reasons(attrs):
    value = attrs.get("validity_reason", "")
    value = value if isinstance(value, (list, tuple)) else [value]
    return "; ".join(str(reason.decode() if isinstance(reason, bytes) else reason) for reason in value if reason)


def loadgen_row(result, kind, load, tool="LoadGen"):
    """One table row from a LoadGen test: its own reported values, and the raw per-sample times (ms)."""
    values, point = result["detail"]["values"], result["points"][-1]
    marks = {key: np.asarray(value, dtype=np.float64) / 1e6 for key, value in result["marks"].items()}
    row = {"tool": tool, "kind": kind, "load": load, "queries": len(point["latency_ns"]),
           "verdict": values.get("result_validity", "?"),
           "raw": np.asarray(point["latency_ns"], dtype=np.float64) / 1e6,
           "scheduled": np.asarray(point["scheduled_us"]) / 1e3, "model": marks["end"] - marks["start"],
           "handoff": marks["start"] - marks["call"]}
    for q in ("50", "90", "99"):
        row[f"p{q}"] = values.get(f"result_{q}.00_percentile_latency_ns", math.nan) / 1e6
    if kind == "single-stream":
        row.update(achieved=values.get("result_qps_with_loadgen_overhead", math.nan), offered=math.nan,
                   why=f"early-stopping p90 {values.get('early_stopping_latency_ss', math.nan) / 1e6:.2f} ms")
    else:
        row.update(achieved=values.get("result_completed_samples_per_sec", math.nan),
                   offered=values.get("result_scheduled_samples_per_sec", math.nan),
                   why=(f"p99 within: {'yes' if values.get('result_perf_constraints_met') else 'NO'}; early "
                        f"stopping: {'yes' if values.get('early_stopping_met') else 'NO'} "
                        f"({values.get('result_overlatency_query_count', '?')} over)"))
    return row


def mpirunner_row(run, kind, load):
    """One table row from an mpirunner run group: its own reported values, and its queries' times (ms)."""
    attrs, found = run["attrs"], run["queries"]
    row = {"tool": "mpirunner", "kind": kind, "load": load, "verdict": "VALID" if attrs.get("valid") else "INVALID",
           "why": reasons(attrs), "achieved": first(attrs, "achieved_qps", "throughput"),
           "offered": first(attrs, "offered_qps_scheduled", "offered_qps")}
    for q in ("50", "90", "99"):
        row[f"p{q}"] = first(attrs, f"query_latency_p{q}", f"latency_p{q}")
    if found:
        row.update(raw=np.where(found["served"], 1e3 * (found["end"] - found["scheduled"]), np.inf),
                   scheduled=1e3 * found["scheduled"], model=1e3 * (found["end"] - found["start"]),
                   forward=1e3 * run["batch_latency"])
    row["queries"] = len(row.get("raw", ()))
    return row


# ---------------------------------------------------------------------------------- measurements

def alternate(round_index, loadgen, mpirunner):
    """Both tools once, LoadGen first in even rounds (0-based), mpirunner first in odd ones."""
    order = [("LoadGen", loadgen), ("mpirunner", mpirunner)]
    rows = {}
    for name, measure in order if round_index % 2 == 0 else order[::-1]:
        rows[name] = measure()
    return [rows["LoadGen"], rows["mpirunner"]]


def single_stream(options, round_index):
    with tempfile.TemporaryDirectory() as folder:
        return alternate(
            round_index,
            lambda: loadgen_row(run_loadgen(options, folder, kind="single-stream", duration=options.duration,
                                            min_queries=100), "single-stream", "-"),
            lambda: mpirunner_row(run_mpirunner(options, folder, ["--scenario", "single-stream", "--iterations", 100,
                                                                  "--min-duration", options.duration])[0],
                                  "single-stream", "-"))


def server(options, round_index, qps, seed=0):
    """Both tools at one load; seed: LoadGen's schedule_rng_seed and mpirunner's --seed (its schedule, weights, data)."""
    with tempfile.TemporaryDirectory() as folder:
        return alternate(
            round_index,
            lambda: loadgen_row(run_loadgen(options, folder, kind="server", qps=qps, duration=options.duration,
                                            schedule_seed=seed), "server", qps),
            lambda: mpirunner_row(run_mpirunner(options, folder, [
                "--scenario", "server", "--target-qps", qps, "--min-duration", options.duration, "--batch-size", 1,
                "--latency-bound", options.bound_ms, "--seed", seed])[0], "server", qps))


def peak_by_rule(points, passes):
    """The highest load that passes `passes` below the lowest that fails it, over a search's points."""
    failing = min([point["load"] for point in points if not passes(point)], default=math.inf)
    return max([point["load"] for point in points if passes(point) and point["load"] < failing], default=math.nan)


def search_point(load, latency, bound_ms, **more):
    """A peak-search point judged both ways: LoadGen's (nearest-rank p99 within the bound) and the upper bound."""
    return {"load": load, "queries": int(latency.size), "p99": nearest_rank(latency, 99),
            "p99_upper": upper_bound(latency, 99), "loadgen_pass": nearest_rank(latency, 99) <= bound_ms,
            "upper_pass": upper_bound(latency, 99) <= bound_ms, **more}


def loadgen_peak(options, folder, start_qps, seed=0):
    """LoadGen's FindPeakPerformance: its points' loads from its detail log, their latencies from its trace."""
    started = time.perf_counter()
    result = run_loadgen(options, folder, kind="peak", qps=start_qps, duration=0, min_queries=options.point_queries,
                         schedule_seed=seed)
    messages = result["detail"]["messages"]
    loads = [start_qps]
    for message in messages:
        if "Checking fields [" in message:  # FindBoundaries: Checking fields [low, high): the high end is run
            loads.append(float(message.split("[")[1].split(",")[1].strip(" )")))
        elif "Testing the mid value" in message:
            loads.append(float(message.rsplit(":", 1)[1]))
    points = [search_point(load, np.asarray(point["latency_ns"], dtype=np.float64) / 1e6, options.bound_ms,
                           offered=(len(point["scheduled_us"]) - 1) / (1e-6 * np.ptp(point["scheduled_us"])))
              for load, point in zip(loads, result["points"])]
    for point in points:
        point["pass"] = point["loadgen_pass"]
    found = [message for message in messages if "Found peak performance field" in message]
    values = result["detail"]["values"]
    return {"tool": "LoadGen", "peak": float(found[0].rsplit(":", 1)[1]) if found else math.nan,
            "high": min([p["load"] for p in points if not p["pass"]], default=math.nan), "points": points,
            "seconds": time.perf_counter() - started, "other_rule": "99% upper bound",
            "other_peak": peak_by_rule(points, lambda point: point["upper_pass"]),
            "note": f"peak point {values.get('result_validity')}, early stopping {values.get('early_stopping_met')}"}


def mpirunner_peak(options, folder, start_qps, seed=0):
    """mpirunner --find-peak-qps from the same start; every point from its run group."""
    started = time.perf_counter()
    runs = run_mpirunner(options, folder, ["--find-peak-qps", "--latency-bound", options.bound_ms, "--target-qps",
                                           start_qps, "--min-duration", 1, "--batch-size", 1, "--seed", seed])
    points = []
    for run in runs:
        attrs = run["attrs"]
        points.append(search_point(first(attrs, "offered_qps_target", "target_qps"),
                                   mpirunner_row(run, "peak", 0).get("raw", np.array([])), options.bound_ms,
                                   offered=first(attrs, "offered_qps_scheduled", "offered_qps"),
                                   own_p99=first(attrs, "query_latency_p99"), **{"pass": bool(attrs.get("valid"))}))
    attrs = runs[-1]["attrs"] if runs else {}
    return {"tool": "mpirunner", "peak": first(attrs, "peak_qps"), "high": first(attrs, "peak_qps_high"),
            "points": points, "seconds": time.perf_counter() - started, "other_rule": "LoadGen's nearest-rank p99",
            "other_peak": peak_by_rule(points, lambda point: point["loadgen_pass"]),
            "note": " ".join(line.strip() for line in (runs[-1]["output"] if runs else "").splitlines()
                             if "peak search" in line)}


def peaks(options, round_index, start_qps, seed=0):
    with tempfile.TemporaryDirectory() as folder:
        return alternate(round_index, lambda: loadgen_peak(options, folder, start_qps, seed),
                         lambda: mpirunner_peak(options, folder, start_qps, seed))


def handoff(options, qps):
    """LoadGen's SUT handing each sample to a worker thread (queue.Queue): single-stream and one server load."""
    worker = argparse.Namespace(**{**vars(options), "sut": "worker"})
    with tempfile.TemporaryDirectory() as folder:
        return [loadgen_row(run_loadgen(worker, folder, kind="single-stream", duration=options.duration,
                                        min_queries=100), "single-stream", "-", "LoadGen+worker"),
                loadgen_row(run_loadgen(worker, folder, kind="server", qps=qps, duration=options.duration),
                            "server", qps, "LoadGen+worker")]


# --------------------------------------------------------------------------------------- printing

def ms(value):
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.2f}"


def row_line(row):
    raw = row["raw"]
    other = interpolated(raw, 99) if row["tool"].startswith("LoadGen") else nearest_rank(raw, 99)
    load = row["load"]
    offered = row["offered"]
    offered_text = "-" if not np.isfinite(offered) else f"{offered:.1f} ({100 * (offered / load - 1):+.1f}%)"
    return (f"{row['kind']:<13} {str(load):>5} {row.get('round', 1):>1} {row.get('seed', '-'):>2} {row['tool']:<14} {row['queries']:>6} {offered_text:>15} "
            f"{row['achieved']:>8.1f} {ms(row['p50']):>7} {ms(row['p90']):>7} {ms(row['p99']):>7} {ms(other):>7} "
            f"{ms(upper_bound(raw, 99)):>7}  {row['verdict']} ({row['why']})")


def overheads(row):
    """What a query's latency holds beyond the model's own time (medians, ms), over all queries and over those
    that found the model idle (scheduled after the previous query completed); the worker's hand-off."""
    if "model" not in row or not row["model"].size:
        return ""
    count = min(row["model"].size, row["raw"].size)
    latency, model, scheduled = row["raw"][:count], row["model"][:count], row["scheduled"][:count]
    idle = np.concatenate([[True], scheduled[1:] >= scheduled[:-1] + latency[:-1]])
    line = (f"{row['tool']} {row['kind']} {row['load']}: latency - model p50 {np.median(latency - model):.3f}; "
            f"{idle.sum()} found it idle: latency - model p50 {np.median((latency - model)[idle]):.3f}, model p50 "
            f"{np.median(model[idle]):.3f} (all: {np.median(model):.3f})")
    if "forward" in row and row["forward"].size:
        line += f"; the forward pass alone (batch_latency) p50 {np.median(row['forward']):.3f}"
    if row["tool"] == "LoadGen+worker":
        handoff = row["handoff"][:count][idle]  # issue_queries called -> the worker starts the model
        line += f"; hand-off when idle p50 {np.median(handoff):.3f}, p99 {nearest_rank(handoff, 99):.3f}"
    return line


def print_report(options, single_rows, server_rows, peak_rows, handoff_rows, capacity):
    print(f"\nresnet18 {options.image_size} px, 1 thread, batch-1 queries; p99 bound {options.bound_ms:g} ms; "
          f"single-stream capacity {capacity:.1f} QPS (1000 / round-1 p50); SUT: {options.sut}")
    print(f"{'scenario':<13} {'load':>5} r {'s':>2} {'tool':<14} {'queries':>6} {'offered (vs load)':>15} {'achieved':>8} "
          f"{'p50':>7} {'p90':>7} {'p99':>7} {'p99 alt':>7} {'p99 ub':>7}  verdict")
    for row in single_rows + server_rows + handoff_rows:
        print(row_line(row))
    print("ms; p99 alt: the other tool's percentile on the same queries (LoadGen rows: mpirunner's interpolated; "
          "mpirunner rows: LoadGen's nearest rank); p99 ub: the 99%-confidence upper bound (stats.percentile_upper_bound)")
    for row in single_rows + server_rows + handoff_rows:
        line = overheads(row)
        if line:
            print("  " + line)
    if not peak_rows:
        return
    print(f"\npeak QPS with p99 within {options.bound_ms:g} ms (both from {peak_rows[0]['start']:g} QPS; LoadGen's "
          f"points {options.point_queries} queries each)")
    for row in peak_rows:
        offered = " ".join(f"{point.get('offered', math.nan):.1f}" for point in row["points"])
        points = " ".join(f"{p['load']:.1f}{'+' if p['pass'] else 'x'}({p['queries']},{ms(p['p99'])},{ms(p['p99_upper'])})"
                          for p in row["points"])
        print(f"  round {row['round']} seed {row['seed']} {row['tool']:<9} peak {row['peak']:.1f} (lowest failing {row['high']:.1f}) in "
              f"{row['seconds']:.0f} s; by {row['other_rule']}: {row['other_peak']:.1f}. {row['note']}\n"
              f"      load +pass/x fail (queries, nearest-rank p99, 99% upper bound): {points}\n"
              f"      offered as scheduled: {offered}")
    by_tool = {tool: [row["peak"] for row in peak_rows if row["tool"] == tool] for tool in ("LoadGen", "mpirunner")}
    for tool, values in by_tool.items():
        print(f"  {tool}: peaks {', '.join(f'{v:.1f}' for v in values)}; mean {np.mean(values):.1f}, "
              f"spread (max - min) {np.ptp(values):.1f}")
    for tool in ("LoadGen", "mpirunner"):
        rows = [row for row in peak_rows if row["tool"] == tool]
        other = ", ".join(f"{row['other_peak']:.1f}" for row in rows)
        print(f"  {tool}'s points judged by {rows[0]['other_rule']}: peaks {other}")
    low = max(min(by_tool["LoadGen"]), min(by_tool["mpirunner"]))
    high = min(max(by_tool["LoadGen"]), max(by_tool["mpirunner"]))
    gap = np.mean(by_tool["mpirunner"]) - np.mean(by_tool["LoadGen"])
    print(f"  mean mpirunner - mean LoadGen: {gap:+.1f} QPS ({100 * gap / np.mean(by_tool['LoadGen']):+.1f}%); "
          f"the two tools' run-to-run ranges {'overlap' if low <= high else 'do NOT overlap'} "
          f"(overlap [{low:.1f}, {high:.1f}])" if low <= high else f"(apart by {low - high:.1f} QPS)")


# ------------------------------------------------------------------------------------------- main

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--bound-ms", type=float, default=45.0, help="p99 latency bound of the server runs and peaks")
    parser.add_argument("--rounds", type=int, default=2, help="each measurement this many times per tool, alternating")
    parser.add_argument("--first-round", type=int, default=1, help="number of the first round (odd: LoadGen first)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each single-stream and server run")
    parser.add_argument("--loads", default="0.3,0.5,0.7", help="server loads as fractions of single-stream capacity")
    parser.add_argument("--qps", help="server loads in QPS (instead of --loads)")
    parser.add_argument("--seeds", default="0", help="server runs and searches: one per arrival-pattern seed "
                        "(LoadGen's schedule_rng_seed, mpirunner's --seed)")
    parser.add_argument("--peak-start", type=float, default=0.3, help="start load of both searches (x capacity)")
    parser.add_argument("--start-qps", type=float, help="start load of both searches in QPS (instead of --peak-start)")
    parser.add_argument("--point-queries", type=int, default=point_queries(), help="queries per LoadGen search point "
                        "(default: mpirunner's, scenarios.point_queries)")
    parser.add_argument("--sut", choices=("inline", "worker"), default="inline",
                        help="LoadGen SUT: model on LoadGen's issuing thread, or on a worker thread fed by a queue")
    parser.add_argument("--skip-single-stream", action="store_true", help="needs --qps and --start-qps")
    for part in ("server", "peak", "handoff"):
        parser.add_argument(f"--skip-{part}", action="store_true")
    parser.add_argument("--json", help="write every row (without raw latencies) to this file")
    options = parser.parse_args()
    started = time.perf_counter()
    single_rows, server_rows, peak_rows, handoff_rows = [], [], [], []
    rounds = range(options.first_round - 1, options.first_round - 1 + options.rounds)
    for round_index in rounds if not options.skip_single_stream else ():
        single_rows += [{**row, "round": round_index + 1} for row in single_stream(options, round_index)]
    capacity = 1000.0 / np.mean([row["p50"] for row in single_rows[:2]]) if single_rows else math.nan
    loads = ([float(q) for q in options.qps.split(",")] if options.qps else
             [round(float(f) * capacity) for f in options.loads.split(",")] if single_rows else [])
    for round_index in rounds if not options.skip_server else ():
        for qps in loads:
            for seed in map(int, options.seeds.split(",")):
                server_rows += [{**row, "round": round_index + 1, "seed": seed}
                                for row in server(options, round_index, qps, seed)]
    if not options.skip_handoff and loads:
        handoff_rows = handoff(options, loads[len(loads) // 2])
    for round_index in rounds if not options.skip_peak else ():
        start_qps = options.start_qps or round(options.peak_start * capacity)
        for seed in map(int, options.seeds.split(",")):
            for row in peaks(options, round_index, start_qps, seed):
                peak_rows.append({**row, "round": round_index + 1, "start": start_qps, "seed": seed})
    print_report(options, single_rows, server_rows, peak_rows, handoff_rows, capacity)
    print(f"\n{time.perf_counter() - started:.0f} s in all")
    if options.json:
        clean = [{key: value for key, value in row.items() if not isinstance(value, np.ndarray)}
                 for row in single_rows + server_rows + handoff_rows]
        Path(options.json).write_text(json.dumps({"rows": clean, "peaks": peak_rows, "capacity": capacity},
                                                 default=float, indent=1))


if __name__ == "__main__":
    main()
