"""Summary rows of mpirunner-report: each file loaded, each run's numbers recomputed from its raw arrays.

Every number here comes from the raw per-step arrays through mpirunner.stats, so the report is
also a check of the summary the runner stored. h5py and numpy only: never torch or mpi4py.
"""
import csv
import json
import math
import sys
from pathlib import Path

import numpy as np

from mpirunner import SCHEMA
from mpirunner import stats
from mpirunner.errors import UsageError
from mpirunner.roofline import broken_roof
from mpirunner.units import exported

SCHEMA_PREFIX = "mpirunner/"

# The summary fields every CSV/JSON row starts with, in this order; other run attributes follow.
ROW_FIELDS = ("file", "run", "batch_size", "samples_per_step", "device_iterations", "model", "precision",
              "dtype", "backend", "device_name", "world_size", "iterations", "throughput", "throughput_sum",
              "latency_min", "latency_mean", "latency_p50", "latency_p90", "latency_p95", "latency_p99",
              "latency_p99.9", "latency_max", "latency_std", "latency_cv", "step_cv", "step_cv_rank_max",
              "compile_seconds_max",
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
            schema = text_value(h5.attrs.get("schema", ""))
    except OSError as error:
        raise UsageError(f"{path}: not a readable HDF5 file (truncated or another format): {first_line(error)}")
    check_schema(path, schema)
    try:
        data = read_results(path)
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise UsageError(f"{path}: damaged or incomplete mpirunner file: {first_line(error)}")
    data["path"] = str(path)
    # A size that could not be measured (status 'failed', e.g. out of memory) has no arrays: listed, never summarised.
    data["failed_runs"] = {name: run for name, run in data["runs"].items() if run["attrs"].get("status") == "failed"}
    data["runs"] = {name: run for name, run in data["runs"].items() if name not in data["failed_runs"]}
    return data


def failed_runs_text(data):
    """One line per failed size of a file ('' when none), for the report and compare."""
    return "\n".join(f"   batch {run['attrs'].get('batch_size', '?')}: FAILED, not measured: "
                     f"{text_value(run['attrs'].get('failure_reason', ''))} ({data['path']})"
                     for _, run in sorted(data.get("failed_runs", {}).items()))


def check_schema(path, schema):
    """UsageError unless `schema` names an mpirunner results schema this version reads (load and summary)."""
    if not schema.startswith(SCHEMA_PREFIX):
        raise UsageError(f"{path}: not an mpirunner results file (no '{SCHEMA}' schema attribute)")
    try:
        version = int(schema[len(SCHEMA_PREFIX):])
    except ValueError:
        raise UsageError(f"{path}: unknown schema '{schema}'; this report reads {SCHEMA}")
    if version > int(SCHEMA[len(SCHEMA_PREFIX):]):
        raise UsageError(f"{path}: schema {schema} is newer than {SCHEMA}, which this mpirunner reads; "
                         "upgrade mpirunner to report on it")


def text_value(value):
    """An attribute as one string: bytes decoded, lists joined with '; ', None as ''."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, (list, tuple, np.ndarray)):
        return "; ".join(text_value(item) for item in value)
    return str(value)


def first_line(error):
    """An exception's first line (its type's name when it has no text), for one-line usage errors."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


# ------------------------------------------------------------------------- derived numbers

class RunRow(dict):
    """A summary row (the CSV/JSON cells) that also carries the run's raw arrays in `.arrays`.

    The arrays (step_seconds, step_start, batch_latency) are not cells: CSV/JSON never see them,
    while compare.compare_runs, which needs the per-step timings, reads them from the row.
    """

    arrays = None


def finite_rows(array):
    """A [ranks, n] array (NaN-padded by the gather) -> one 1-D array of finite values per rank; [] when not stored."""
    if array is None:
        return []
    table = np.atleast_2d(np.asarray(array, dtype=np.float64))
    return [row[np.isfinite(row)] for row in table]


def _flat(array):
    rows = finite_rows(array)
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
    for key, value in broken_roof(dict(attrs)).items():  # an older file's utilisation above 1: a broken roof
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
            row["step_cv_rank_max"] = stats.max_rank_cv(run["step_seconds"])
    latency = run_latency(run)
    if latency.size:
        row.update(stats.latency_summary(latency))
    if run.get("compile_seconds") is not None and np.size(run["compile_seconds"]):
        row["compile_seconds_max"] = float(np.nanmax(run["compile_seconds"]))
    row["validity_reason"] = text_value(attrs.get("validity_reason", ""))
    row["valid"] = bool(attrs.get("valid", True))
    ordered = RunRow({key: row.get(key, "") for key in ROW_FIELDS})
    ordered.update({key: row[key] for key in sorted(row) if key not in ordered})
    ordered.arrays = {key: run.get(key) for key in ("step_seconds", "step_start", "batch_latency")}
    return ordered


def _scalar(value):
    """An attribute as a CSV/JSON cell: numbers and strings stay, arrays and lists become '; '-joined text."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple, np.ndarray)):
        return text_value([_scalar(item) for item in np.asarray(value).ravel().tolist()]) if np.size(value) else ""
    return value


def sorted_runs(data):
    """Run group names ordered by batch size (then name), the order of a sweep."""
    return sorted(data["runs"], key=lambda name: (data["runs"][name]["attrs"].get("batch_size", 0), name))


def first_run_attrs(data):
    """Attributes of the file's first run in sweep order ({} when it holds none): model, precision, data."""
    return data["runs"][sorted_runs(data)[0]]["attrs"] if data["runs"] else {}


# ------------------------------------------------------------------------------- file output

def write_rows(rows, path, kind):
    """Write the summary rows as CSV or JSON to PATH ('-': stdout). Non-finite numbers become empty / null.

    Column names carry their unit (units.py: `latency_p50_ms`, `step_cv_percent`); unit-less aliases are left out."""
    rows = [exported(row) for row in rows]
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
    except BrokenPipeError:
        raise  # the reader went away (`| head`): not an error of the path; main() ends quietly
    except OSError as error:
        raise UsageError(f"cannot write --{kind} {path}: {error.strerror or error}")
    finally:
        if handle is not None and handle is not sys.stdout:
            handle.close()


def _cell(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
