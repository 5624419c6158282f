"""`mpirunner-report summary`: one row per run group over many result files, from their attributes alone.

Only the root and run-group attributes are read (and, for the HTML page, each run's stored
histogram, a few hundred numbers); the per-step arrays never are for the table, so hundreds of
files summarise in seconds (trends read step_seconds alone, read_step_seconds). The numbers are the
summary the runner stored; `mpirunner-report FILE` recomputes them from the arrays when a file's own
numbers are in doubt. A file that cannot be read (damaged,
another format, a newer schema) is listed as skipped with its reason, never fatal.
"""
import fnmatch
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mpirunner.errors import UsageError
from mpirunner.report.configuration import ROOT_ATTRS as KEY_ROOT_ATTRS, RUN_ATTRS as KEY_RUN_ATTRS, configuration_key
from mpirunner.report.rows import check_schema, first_line, text_value, write_rows
from mpirunner.units import in_unit, unit_name, value_of

RESULT_SUFFIXES = (".h5", ".hdf5")

# (column in CSV/JSON, with its unit; key of the row). Column names and values follow units.py, as in the file's
# unit-named twins and `mpirunner-report FILE --csv`: latencies in ms, throughput in samples/s, utilization in percent.
_UNIT_KEYS = ("throughput", "throughput_ci95_low", "throughput_ci95_high", "latency_p50", "latency_p50_ci95_low",
              "latency_p50_ci95_high", "latency_p99", "latency_p99_ci95_low", "latency_p99_ci95_high", "utilization")
COLUMNS = (("file", "file"), ("run", "run"), ("model", "model"), ("precision", "precision"), ("dtype", "dtype"),
           ("backend", "backend"), ("device_name", "device_name"), ("world_size", "world_size"),
           ("hosts", "hosts"), ("batch_size", "batch_size"), ("samples_per_step", "samples_per_step"),
           *((unit_name(key), key) for key in _UNIT_KEYS), ("valid", "valid"), ("validity_reason", "validity_reason"),
           ("created_utc", "created"), ("git_commit", "git_commit"))
RUN_KEYS = tuple(key for _column, key in COLUMNS
                 if key not in ("file", "run", "backend", "device_name", "world_size", "hosts", "created", "git_commit"))
ROOT_KEYS = ("backend", "device_name", "world_size", "hosts", "created", "git_commit", "dtype")
RUN_ATTRS = RUN_KEYS + ("dtype", "valid", "validity_reason")

# --sort names -> row keys; '-name' sorts that key in descending order.
SORT_KEYS = {"model": "model", "precision": "precision", "device": "device_name", "world-size": "world_size",
             "batch-size": "batch_size", "throughput": "throughput", "p50": "latency_p50", "p99": "latency_p99",
             "created": "created", "commit": "git_commit", "file": "file", "valid": "valid"}
DEFAULT_SORT = ("model", "precision", "device", "world-size", "batch-size", "created", "file")


@dataclass
class SummaryRun:
    """One run group: its table row, its attributes and its file's as stored, its histogram when asked for."""

    row: dict
    attrs: dict
    root: dict
    histogram: tuple = None  # (counts, edges in s), or None
    key: dict = None  # its configuration key (report/configuration.py) when read with keys=True


@dataclass
class Summary:
    """What a summary read: the runs, the files it skipped with their reasons, and how many other files it passed."""

    runs: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # (path, reason)
    other_files: int = 0


# ---------------------------------------------------------------------------------- finding files

def find_files(paths):
    """(result files, count of other files): each PATH as given, each folder searched recursively for *.h5 / *.hdf5.

    A file named on the command line is always tried, whatever its name; in folders only the
    result suffixes count (other files are counted, not read). Raises UsageError for a PATH that
    does not exist (a typo, not a damaged result).
    """
    files, others = [], 0
    for path in map(Path, paths):
        if path.is_dir():
            for candidate in sorted(path.rglob("*")):
                if not candidate.is_file():
                    continue
                if candidate.suffix.lower() in RESULT_SUFFIXES and not candidate.name.startswith("."):
                    files.append(candidate)
                else:
                    others += 1
        elif path.exists():
            files.append(path)
        else:
            raise UsageError(f"{path}: no such file or folder")
    unique = list(dict.fromkeys(files))
    return unique, others


# ----------------------------------------------------------------------------------- reading

def _plain(value):
    """An attribute as plain Python: bytes decoded, string arrays as lists, numpy scalars as Python numbers."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return [_plain(item) for item in value.tolist()] if value.dtype == object else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_file(path, histograms=False, keys=False):
    """The SummaryRuns of one file, in run-group order; raises UsageError with the reason it cannot be read.

    keys: also read what the configuration key needs (the stored settings and a few attributes; trends).
    """
    import h5py

    try:
        h5 = h5py.File(path, "r")
    except OSError as error:
        raise UsageError(f"not a readable HDF5 file: {first_line(error)}")
    with h5:
        check_schema(path, text_value(h5.attrs.get("schema", "")))
        try:
            root = _attributes(h5, None if histograms else ROOT_KEYS + (KEY_ROOT_ATTRS if keys else ()))
            settings = {"config": text_value(h5.attrs.get("config", ""))} if keys else None
            return [_summary_run(path, name, group, root, histograms, settings) for name, group in h5["runs"].items()]
        except (KeyError, OSError, ValueError, TypeError) as error:
            raise UsageError(f"damaged or incomplete mpirunner file: {first_line(error)}")


def _attributes(node, wanted):
    """The node's attributes as plain Python: only the `wanted` ones (each read costs ~0.1 ms), or all but the config."""
    names = [key for key in node.attrs if (key != "config" if wanted is None else key in wanted)]
    return {key: _plain(node.attrs[key]) for key in names}


def _summary_run(path, name, group, root, histograms, settings=None):
    """settings: {'config': the stored settings} when the configuration key is wanted, else None."""
    wanted = None if histograms else RUN_ATTRS + (KEY_RUN_ATTRS if settings is not None else ())
    attrs = _attributes(group, wanted)  # the page prints every attribute of a run
    row = {"file": str(path), "run": name}
    for key in ("backend", "device_name", "world_size", "created", "git_commit"):
        row[key] = root.get(key, "")
    row["hosts"] = text_value(root.get("hosts", ""))
    for key in RUN_KEYS:
        twin = unit_name(key)  # a file without the old name: its unit-named twin, read only then
        row[key] = value_of(attrs if key in attrs or twin not in group.attrs else {twin: _plain(group.attrs[twin])},
                            key, "")
    row["dtype"] = attrs.get("dtype", root.get("dtype", ""))
    row["valid"] = bool(attrs.get("valid", True))
    row["validity_reason"] = text_value(attrs.get("validity_reason", ""))
    histogram = None
    if histograms and "histogram" in group:
        histogram = (group["histogram/counts"][()], group["histogram/edges"][()])
    key = configuration_key({**root, **settings}, attrs) if settings is not None else None
    return SummaryRun(row=row, attrs=attrs, root=root, histogram=histogram, key=key)


def read_step_seconds(path, name):
    """Run group `name`'s step_seconds array ([ranks, steps], s), None when it has none: what a trend's rule needs.

    Only that dataset is read (not the file's other arrays); raises UsageError when the file can no longer be read.
    """
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            group = h5["runs"][name]
            return group["step_seconds"][()] if "step_seconds" in group else None
    except (KeyError, OSError, ValueError, TypeError) as error:
        raise UsageError(f"{path}: damaged or incomplete mpirunner file: {first_line(error)}")


def read_summary(paths, histograms=False, keys=False):
    """Every run of every result file under PATHS; unreadable files go to `skipped` with their reason.

    keys: each run also carries its configuration key (what trends pair runs by)."""
    files, others = find_files(paths)
    summary = Summary(other_files=others)
    for path in files:
        try:
            summary.runs.extend(read_file(path, histograms=histograms, keys=keys))
        except UsageError as error:
            reason = str(error)
            prefix = f"{path}: "
            summary.skipped.append((str(path), reason[len(prefix):] if reason.startswith(prefix) else reason))
    return summary


# ------------------------------------------------------------------------------ filters and sort

def parse_batch_sizes(text):
    """'1,8,32' -> {1, 8, 32}; UsageError on anything else."""
    try:
        sizes = {int(part) for part in str(text).split(",") if part.strip()}
    except ValueError:
        raise UsageError(f"--batch-size takes whole numbers separated by commas, got '{text}'")
    if not sizes or min(sizes) < 1:
        raise UsageError(f"--batch-size takes whole numbers >= 1 separated by commas, got '{text}'")
    return sizes


def select(runs, models=(), devices=(), batch_sizes=(), valid_only=False):
    """The runs that pass every filter given.

    models: glob patterns (`resnet*`), case-insensitive; devices: the backend (cpu, cuda, ipu) or a
    glob or part of the device name, case-insensitive; batch_sizes: a set of sizes.
    """
    def model_ok(row):
        return not models or any(fnmatch.fnmatch(str(row["model"]).lower(), pattern.lower()) for pattern in models)

    def device_ok(row):
        if not devices:
            return True
        backend, name = str(row["backend"]).lower(), str(row["device_name"]).lower()
        return any(pattern.lower() == backend or pattern.lower() in name or fnmatch.fnmatch(name, pattern.lower())
                   for pattern in devices)

    return [run for run in runs if model_ok(run.row) and device_ok(run.row)
            and (not batch_sizes or run.row["batch_size"] in batch_sizes)
            and (run.row["valid"] or not valid_only)]


def parse_sort(text):
    """'created,-throughput' -> [('created', False), ('throughput', True)]; UsageError on an unknown key."""
    keys = []
    for part in (piece.strip() for piece in str(text).split(",")):
        if not part:
            continue
        name, descending = (part[1:], True) if part.startswith("-") else (part, False)
        if name not in SORT_KEYS:
            raise UsageError(f"--sort: unknown key '{name}'; use {', '.join(SORT_KEYS)} (a leading '-' sorts descending)")
        keys.append((name, descending))
    return keys


def sort_runs(runs, keys=None):
    """Runs sorted by the (name, descending) keys, then by the default order; missing values last either way."""
    keys = list(keys or []) + [(name, False) for name in DEFAULT_SORT]
    ordered = list(runs)
    for name, descending in reversed(keys):  # stable sorts, least significant key first
        key = SORT_KEYS[name]
        present = [run for run in ordered if _sortable(run.row.get(key)) is not None]
        missing = [run for run in ordered if _sortable(run.row.get(key)) is None]
        present.sort(key=lambda run: _sortable(run.row.get(key)), reverse=descending)
        ordered = present + missing
    return ordered


def _sortable(value):
    """A value numbers and texts can be sorted by (numbers before texts), or None when it is missing."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (bool, int, float)):
        return (0, float(value), "")
    return (1, 0.0, str(value))


# -------------------------------------------------------------------------------------- output

def output_rows(runs, extra_columns=()):
    """The rows as CSV/JSON writes them: column names carry their units; extra (name, key) columns appended.

    A field the file lacks is None (empty in CSV, null in JSON)."""
    columns = COLUMNS + tuple(extra_columns)
    return [{column: None if run.row.get(key, "") == "" else in_unit(key, run.row[key]) for column, key in columns}
            for run in runs]


def write_summary(runs, path, kind, extra_columns=()):
    """Write the summary rows as 'csv' or 'json' to PATH ('-': stdout), through rows.write_rows."""
    write_rows(output_rows(runs, extra_columns), path, kind)
