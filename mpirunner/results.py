"""Gather every rank's timings to rank 0, and write / read the HDF5 file (schema mpirunner/1).

The file is always built whole in memory, written to a temporary file in the same folder, fsynced
and renamed over the target, so the file on disk is complete and valid at every moment. A sweep rewrites it after
each finished run. Reading needs only h5py and numpy (mpirunner.report uses it on machines without torch).
A run's RunRecord (record.py) becomes its run group's attributes and datasets here, and only here.
"""
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mpirunner import SCHEMA
from mpirunner.units import unit_twins

STRING_COLUMNS = ("host", "cpus", "device", "mem_policy", "launcher_binding")
NUMBERS = (bool, int, float, np.number, np.bool_)


@dataclass
class RunResult:
    """One point as rank 0 holds it: gathered arrays ([ranks, ...]) and summary attributes.
    A failed point (status 'failed', e.g. out of memory) has attributes only: its arrays are None."""

    name: str
    attrs: dict
    step_seconds: np.ndarray = None
    step_start: np.ndarray = None
    batch_latency: np.ndarray = None
    compile_seconds: np.ndarray = None
    extra_datasets: dict = field(default_factory=dict)


def _stack_rows(rows):
    """Rows of possibly different lengths -> 2-D float64 array, NaN-padded on the right."""
    width = max((row.size for row in rows), default=0)
    table = np.full((len(rows), width), np.nan)
    for index, row in enumerate(rows):
        table[index, :row.size] = row
    return table


TIMING_ARRAYS = ("step_seconds", "step_start", "batch_latency")


def gather_timings(world, timings):
    """Gather this rank's Timings to rank 0 in one Gatherv. Returns a dict of [ranks, ...] arrays there, else None.

    Each rank packs [compile_seconds, the three array lengths, the three arrays] into one float64
    row, so the cost is one message per rank whatever the number of steps (64 ranks x 10,000 steps:
    about 15 MB, well under a second).
    """
    arrays = [np.asarray(getattr(timings, name), dtype=np.float64).ravel() for name in TIMING_ARRAYS]
    packed = np.concatenate([[timings.compile_seconds], [array.size for array in arrays], *arrays])
    rows = world.gather_rows(packed)
    if rows is None:
        return None
    gathered = {name: [] for name in TIMING_ARRAYS}
    for row in rows:
        sizes = row[1:1 + len(TIMING_ARRAYS)].astype(np.int64)
        offsets = np.cumsum(np.concatenate([[1 + len(TIMING_ARRAYS)], sizes]))
        for index, name in enumerate(TIMING_ARRAYS):
            gathered[name].append(row[offsets[index]:offsets[index + 1]])
    result = {name: _stack_rows(pieces) for name, pieces in gathered.items()}
    result["compile_seconds"] = np.array([row[0] for row in rows])
    return result


def output_path(config, now):
    """The file this job writes: --output, else results/<config or model>-<UTC time>.h5."""
    if config.output:
        return Path(config.output)
    return Path("results") / f"{config.name}-{now.strftime('%Y%m%dT%H%M%SZ')}.h5"


def _attr_value(value):
    """HDF5 attributes cannot hold None or dicts: store '' and YAML text instead."""
    if value is None:
        return ""
    if isinstance(value, (bytes, np.bytes_)):  # stored as bytes, h5py would read it back as bytes: text is str
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        return str(value)  # plain str: numpy cannot store subclasses such as torch's TorchVersion
    if isinstance(value, dict):
        import yaml

        return yaml.safe_dump(value, sort_keys=True)
    if isinstance(value, (list, tuple)):
        if all(isinstance(item, (int, float, np.integer, np.floating)) and not isinstance(item, bool) for item in value) and value:
            return np.asarray(value)
        return np.asarray([_attr_value(item) if isinstance(item, (bytes, np.bytes_)) else str(item) for item in value],
                          dtype=object) if value else ""
    return value


def _set_attrs(node, attrs):
    import h5py

    for key, value in attrs.items():
        value = _attr_value(value)
        if isinstance(value, np.ndarray) and value.dtype == object:
            node.attrs.create(key, value, dtype=h5py.string_dtype())
        else:
            node.attrs[key] = value


def _set_text_columns(ranks):
    """Each text column of /ranks also as an attribute of it (one str per rank): h5py reads text inside a
    compound dataset back as bytes, but text attributes as str (`h5["ranks"].attrs["host"]`)."""
    import h5py

    table = ranks[()]
    for name in table.dtype.names:
        if h5py.check_string_dtype(table.dtype[name]) is not None:
            ranks.attrs.create(name, np.array([_decode(value) for value in table[name]], dtype=object),
                               dtype=h5py.string_dtype())


def _ranks_table(rows):
    """List of per-rank dicts -> structured array, one column per key (first-seen order).

    A column is text when any value is not a number (or it is named in STRING_COLUMNS), else bool,
    int or float from its values; missing values become '' / False / -1.
    """
    import h5py

    columns = list(dict.fromkeys(key for row in rows for key in row))
    fields = []
    for key in columns:
        values = [row.get(key) for row in rows if row.get(key) is not None]
        if key in STRING_COLUMNS or not all(isinstance(value, NUMBERS) for value in values):
            fields.append((key, h5py.string_dtype(), ""))
        elif values and all(isinstance(value, (bool, np.bool_)) for value in values):
            fields.append((key, np.bool_, False))
        elif any(isinstance(value, (float, np.floating)) for value in values):
            fields.append((key, np.float64, -1.0))
        else:
            fields.append((key, np.int64, -1))
    records = [tuple(_cell(row.get(key), dtype, missing) for key, dtype, missing in fields) for row in rows]
    return np.array(records, dtype=[(key, dtype) for key, dtype, _ in fields])


def _cell(value, dtype, missing):
    if value is None:
        return missing
    return str(value) if dtype not in (np.bool_, np.float64, np.int64) else value


def _hdf5_image(root_attrs, rank_rows, runs):
    """The whole file, built in memory: nothing reaches the disk until it is complete."""
    import io

    import h5py

    image = io.BytesIO()
    with h5py.File(image, "w") as h5:
        _set_attrs(h5, {"schema": SCHEMA, **root_attrs})
        ranks = h5.create_dataset("ranks", data=_ranks_table(rank_rows))
        _set_text_columns(ranks)
        runs_group = h5.create_group("runs")
        for run in runs:
            group = runs_group.create_group(run.name)
            _set_attrs(group, run.attrs)
            for name in ("step_seconds", "step_start", "batch_latency", "compile_seconds"):
                if getattr(run, name) is not None:  # a failed run has none
                    group.create_dataset(name, data=getattr(run, name))
            for name, data in run.extra_datasets.items():
                group.create_dataset(name, data=data)
    return image.getbuffer()


def _write_all(handle, data):
    view = memoryview(data)
    while view:
        view = view[os.write(handle, view):]


def _write_named(temporary, data):
    """Write and fsync a new named temporary file (never an existing one)."""
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        _write_all(handle, data)
        os.fsync(handle)
    finally:
        os.close(handle)


def write_results(path, root_attrs, rank_rows, runs):
    """Write the whole file atomically: build it in memory, write a temporary file in the same folder,
    fsync, rename over the target.

    On Linux the temporary file is unnamed (O_TMPFILE) until it is complete, so a process killed
    mid-write (SIGKILL from MPI_Abort, the OOM killer) leaves nothing behind; it gets a name only
    for the instant between link and rename. Elsewhere a named '.<name>.tmp-<pid>' file is used,
    and stale ones of dead processes are removed on the next write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _hdf5_image(root_attrs, rank_rows, runs)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _remove_stale_temporaries(path)
    temporary.unlink(missing_ok=True)  # left by an earlier process that had this pid
    unnamed = _open_unnamed(path.parent)
    try:
        if unnamed is None:
            _write_named(temporary, data)
        else:
            try:
                _write_all(unnamed, data)
                os.fsync(unnamed)
                try:
                    _link_unnamed(unnamed, temporary)
                except OSError:  # /proc or linkat refused (some containers): write a named temporary instead
                    _write_named(temporary, data)
            finally:
                os.close(unnamed)
        os.replace(temporary, path)
        _fsync_folder(path.parent)
    finally:
        if temporary.exists():
            temporary.unlink()
    return path


def _open_unnamed(folder):
    """An unnamed file in `folder` (Linux O_TMPFILE), or None where the OS or file system lacks it."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.open(folder, flag | os.O_WRONLY, 0o666)
    except OSError:
        return None


def _link_unnamed(handle, name):
    """Give the unnamed file a name: linkat(AT_SYMLINK_FOLLOW) on /proc/self/fd/<handle>.

    A directory fd is passed so that Python calls linkat (plain link() would not follow the link).
    """
    proc = os.open("/proc/self/fd", os.O_RDONLY)
    try:
        os.link(str(handle), name, src_dir_fd=proc, follow_symlinks=True)
    finally:
        os.close(proc)


def _remove_stale_temporaries(path):
    """Remove '.<name>.tmp-<pid>' files of this target left by processes that no longer run on this host."""
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        try:
            os.kill(int(stale.name.rsplit("-", 1)[1]), 0)
        except ProcessLookupError:
            stale.unlink(missing_ok=True)
        except (ValueError, PermissionError, OSError):
            continue


def _fsync_folder(folder):
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _decode(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.dtype == object:
        return [_decode(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_results(path):
    """The whole file as plain Python: {'attrs', 'ranks' (list of dicts), 'runs' {name: {'attrs', arrays...}}}."""
    import h5py

    with h5py.File(path, "r") as h5:
        data = {"attrs": {key: _decode(value) for key, value in h5.attrs.items()}, "runs": {}}
        table = h5["ranks"][()]
        data["ranks"] = [{name: _decode(row[name]) for name in table.dtype.names} for row in table]
        for name, group in h5["runs"].items():
            run = {"attrs": {key: _decode(value) for key, value in group.attrs.items()}}
            group.visititems(lambda key, item, run=run: run.__setitem__(key, item[()])
                             if isinstance(item, h5py.Dataset) else None)
            data["runs"][name] = run
    return data


# ---------------------------------------------------------------- a run record -> its run group

def _point_attrs(point):
    """What was asked for (the RunPoint), as every run group names it, measured or failed."""
    return {"batch_size": point.batch_size, "device_iterations": point.device_iterations,
            "local_replicas": point.local_replicas, "samples_per_step": point.samples_per_step,
            "model": point.model, "data": point.data, "precision": point.precision, "dtype": point.dtype,
            "image_size": point.image_size, "iterations_requested": point.iterations_requested,
            "warmup": point.warmup}


def run_attrs(record):
    """The run group's attributes, flattened from the RunRecord (the only place this happens)."""
    point, timings, inputs = record.point, record.timings, record.input_path
    busy = inputs.device_busy
    attrs = {
        **_point_attrs(point),
        "input_pool_steps": inputs.pool_steps, "input_pool_bytes": inputs.pool_bytes,
        "input_pool_limit_bytes": point.input_pool_limit_bytes,
        "host_gap_max": float(np.nanmax(inputs.host_gap)),
        "device_busy_min": float(np.nanmin(busy)) if np.any(np.isfinite(busy)) else float("nan"),
        "iterations": int(timings["step_seconds"].shape[1]),
        "measured_steps": record.measured_steps, "windows": record.windows, "windows_kept": record.windows_kept,
        "compile_seconds_max": float(np.max(timings["compile_seconds"])),
        "status": "measured", "failure_reason": "",
        "valid": record.validity.valid, "validity_reason": list(record.validity.reasons),
        **record.summary, **record.device_attrs,
    }
    for check in record.checks:
        attrs.update(check.attrs)
    attrs.update(record.compute)
    if record.scenario is not None:
        attrs.update(record.scenario.attrs)
    attrs.update(unit_twins(attrs))  # latency_p50 -> latency_p50_ms, step_cv -> step_cv_percent (units.py)
    return attrs


def run_datasets(record):
    """The run group's datasets beyond the timing arrays: histogram, barrier waits, input shares, per-rank values."""
    return {"histogram/counts": record.histogram_counts, "histogram/edges": record.histogram_edges,
            "barrier_wait_seconds": np.asarray(record.barrier_wait_seconds, dtype=np.float64),
            "host_gap": np.asarray(record.input_path.host_gap, dtype=np.float64),
            "device_busy": np.asarray(record.input_path.device_busy, dtype=np.float64),
            **{key: np.asarray(values) for key, values in record.device_per_rank.items()},
            **({f"queries/{key}": np.asarray(values) for key, values in record.scenario.queries.items()}
               if record.scenario is not None else {})}


def failed_run_result(name, point, reason):
    """The run group of a point that could not be measured (out of memory): what was asked, why it failed."""
    attrs = {**_point_attrs(point), "status": "failed", "failure_reason": reason, "valid": False,
             "validity_reason": [reason]}
    return RunResult(name=name, attrs=attrs)


def run_result(record):
    """The RunResult that write_results stores for a RunRecord."""
    return RunResult(name=record.name, attrs=run_attrs(record), extra_datasets=run_datasets(record),
                     **{name: record.timings[name] for name in (*TIMING_ARRAYS, "compile_seconds")})
