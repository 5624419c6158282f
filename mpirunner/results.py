"""Gather every rank's timings to rank 0, and write / read the HDF5 file (schema mpirunner/1).

The file is always written whole to a temporary name in the same folder, fsynced and renamed over
the target, so the file on disk is complete and valid at every moment. A sweep rewrites it after
each finished run. Reading needs only h5py and numpy (report.py uses it on machines without torch).
"""
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mpirunner import SCHEMA

STRING_COLUMNS = ("host", "cpus", "device", "mem_policy", "launcher_binding")


@dataclass
class RunResult:
    """One measured point as rank 0 holds it: gathered arrays ([ranks, ...]) and summary attributes."""

    name: str
    attrs: dict
    step_seconds: np.ndarray
    step_start: np.ndarray
    batch_latency: np.ndarray
    compile_seconds: np.ndarray
    extra_datasets: dict = field(default_factory=dict)


def _stack_rows(rows):
    """Rows of possibly different lengths -> 2-D float64 array, NaN-padded on the right."""
    width = max((row.size for row in rows), default=0)
    table = np.full((len(rows), width), np.nan)
    for index, row in enumerate(rows):
        table[index, :row.size] = row
    return table


def gather_timings(world, timings):
    """Gatherv each array of this rank's Timings to rank 0. Returns a dict of [ranks, ...] arrays there, else None."""
    gathered = {}
    for name in ("step_seconds", "step_start", "batch_latency"):
        rows = world.gather_rows(getattr(timings, name))
        if rows is not None:
            gathered[name] = _stack_rows(rows)
    compile_rows = world.gather_rows(np.array([timings.compile_seconds]))
    if compile_rows is None:
        return None
    gathered["compile_seconds"] = np.concatenate(compile_rows)
    return gathered


def output_path(config, now):
    """The file this job writes: --output, else results/<config or model>-<UTC time>.h5."""
    if config.output:
        return Path(config.output)
    return Path("results") / f"{config.name}-{now.strftime('%Y%m%dT%H%M%SZ')}.h5"


def check_output_writable(path, overwrite):
    """Raise UsageError (on rank 0, before any work) when the output cannot or may not be written."""
    from mpirunner.errors import UsageError

    path = Path(path)
    if path.exists() and path.is_dir():
        raise UsageError(f"--output {path} is a directory; give a file name ending in .h5")
    if path.exists() and not overwrite:
        raise UsageError(f"output {path} already exists; pass --overwrite to replace it or choose another --output")
    folder = path.parent if str(path.parent) else Path(".")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write output {path}: folder {existing} is not writable")


def _attr_value(value):
    """HDF5 attributes cannot hold None or dicts: store '' and YAML text instead."""
    if value is None:
        return ""
    if isinstance(value, str):
        return str(value)  # plain str: numpy cannot store subclasses such as torch's TorchVersion
    if isinstance(value, dict):
        import yaml

        return yaml.safe_dump(value, sort_keys=True)
    if isinstance(value, (list, tuple)):
        if all(isinstance(item, (int, float, np.integer, np.floating)) and not isinstance(item, bool) for item in value) and value:
            return np.asarray(value)
        return np.asarray([str(item) for item in value], dtype=object) if value else ""
    return value


def _set_attrs(node, attrs):
    import h5py

    for key, value in attrs.items():
        value = _attr_value(value)
        if isinstance(value, np.ndarray) and value.dtype == object:
            node.attrs.create(key, value, dtype=h5py.string_dtype())
        else:
            node.attrs[key] = value


def _ranks_table(rows):
    """List of per-rank dicts -> numpy structured array with one column per key (strings as UTF-8)."""
    import h5py

    columns = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    fields = []
    for key in columns:
        sample = next((row[key] for row in rows if row.get(key) is not None), "")
        if isinstance(sample, str) or key in STRING_COLUMNS:
            fields.append((key, h5py.string_dtype()))
        elif isinstance(sample, bool):
            fields.append((key, np.bool_))
        elif isinstance(sample, float):
            fields.append((key, np.float64))
        else:
            fields.append((key, np.int64))
    table = np.zeros(len(rows), dtype=fields)
    for index, row in enumerate(rows):
        for key, dtype in fields:
            value = row.get(key)
            if value is None:
                value = "" if dtype is not np.float64 and not np.issubdtype(np.dtype(dtype), np.number) else -1
            table[index][key] = str(value) if dtype not in (np.bool_, np.float64, np.int64) else value
    return table


def write_results(path, root_attrs, rank_rows, runs):
    """Write the whole file atomically: temporary file in the same folder, fsync, rename."""
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(temporary, "w") as h5:
            _set_attrs(h5, {"schema": SCHEMA, **root_attrs})
            h5.create_dataset("ranks", data=_ranks_table(rank_rows))
            runs_group = h5.create_group("runs")
            for run in runs:
                group = runs_group.create_group(run.name)
                _set_attrs(group, run.attrs)
                for name in ("step_seconds", "step_start", "batch_latency", "compile_seconds"):
                    group.create_dataset(name, data=getattr(run, name))
                for name, data in run.extra_datasets.items():
                    group.create_dataset(name, data=data)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        _fsync_folder(path.parent)
    finally:
        if temporary.exists():
            temporary.unlink()
    return path


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
