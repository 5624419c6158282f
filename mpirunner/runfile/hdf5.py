"""The only module under mpirunner/ that imports h5py: write a Job to its file, whole and atomically
(docs/failure-behaviour.md, "Nothing lost"), and read it back (schema mpirunner/1) with h5py and numpy alone.
"""
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from mpirunner import SCHEMA
from mpirunner.errors import UsageError
from mpirunner.runfile.block import text_value
from mpirunner.runfile.names import plain, stored_text, unit_name
from mpirunner.runfile.run import Job, Run, RunArrays

SCHEMA_PREFIX = "mpirunner/"
STRING_COLUMNS = ("host", "cpus", "device", "mem_policy", "launcher_binding")
NUMBERS = (bool, int, float, np.number, np.bool_)


def _attr_value(value):
    """HDF5 attributes cannot hold None or dicts: store '' and YAML text instead; bytes as str (h5py would read them
    back as bytes), a str subclass (torch's TorchVersion) as str."""
    if value is None or isinstance(value, (bytes, np.bytes_, str, dict)):
        return stored_text(value)
    if not isinstance(value, (list, tuple)):
        return value
    if value and all(isinstance(item, (int, float, np.integer, np.floating)) and not isinstance(item, bool)
                     for item in value):
        return np.asarray(value)
    return np.asarray([stored_text(item) if isinstance(item, (bytes, np.bytes_)) else str(item) for item in value],
                      dtype=object) if value else ""


def _set_attrs(node, attrs):
    """Set attributes: text lists as variable-length strings."""
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
            ranks.attrs.create(name, np.array([plain(value) for value in table[name]], dtype=object),
                               dtype=h5py.string_dtype())


def _ranks_table(rows):
    """Per-rank dicts -> structured array, one typed column per key (first-seen order); '' / False / -1 if missing."""
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


def _hdf5_image(job):
    """The whole file, built in memory: nothing reaches the disk until it is complete."""
    import io

    import h5py

    image = io.BytesIO()
    with h5py.File(image, "w") as h5:
        _set_attrs(h5, {"schema": SCHEMA, **{key: value for key, value in job.attrs().items() if key != "schema"}})
        ranks = h5.create_dataset("ranks", data=_ranks_table([row.as_dict() for row in job.ranks]))
        _set_text_columns(ranks)
        runs_group = h5.create_group("runs")
        for run in sorted(job.runs, key=lambda run: run.name):
            group = runs_group.create_group(run.name)
            _set_attrs(group, run.attrs())
            for name, data in run.arrays.all().items():  # a failed run has none
                group.create_dataset(name, data=data)
    return image.getbuffer()


def _write_all(handle, data):
    """Write all of `data` and fsync it."""
    view = memoryview(data)
    while view:
        view = view[os.write(handle, view):]
    os.fsync(handle)


def _write_named(temporary, data):
    """Write and fsync a new named temporary file (never an existing one)."""
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        _write_all(handle, data)
    finally:
        os.close(handle)


def write_job(path, job):
    """Write the whole file atomically. The temporary file is unnamed (O_TMPFILE) until it is complete, so a process
    killed mid-write leaves nothing behind; elsewhere a named '.<name>.tmp-<pid>' file is used."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _hdf5_image(job)
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
                try:
                    _link_unnamed(unnamed, temporary)
                except OSError:  # /proc or linkat refused (some containers): write a named temporary instead
                    _write_named(temporary, data)
            finally:
                os.close(unnamed)
        os.replace(temporary, path)
        _fsync_folder(path.parent)
    finally:
        temporary.unlink(missing_ok=True)
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
    """Give the unnamed file a name: linkat(AT_SYMLINK_FOLLOW) on /proc/self/fd/<handle> (a directory fd is passed
    so that Python calls linkat: plain link() would not follow the link)."""
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


def _loader(path, name):
    """Read datasets of run group `name` on demand (each call opens the file once)."""
    def load(wanted):
        import h5py

        with h5py.File(path, "r") as h5:
            group = h5["runs"][name]
            return {key: group[key][()] for key in wanted}
    return load


def read_job(path):
    """The file as a Job; its runs read their arrays on first access. Raises OSError/KeyError/ValueError on damage."""
    import h5py

    with h5py.File(path, "r") as h5:
        root = {key: plain(value) for key, value in h5.attrs.items()}
        table = h5["ranks"][()]
        ranks = [{name: plain(row[name]) for name in table.dtype.names} for row in table]
        runs = []
        for name, group in h5["runs"].items():
            found = []
            group.visititems(lambda key, item, found=found: found.append(key)
                             if isinstance(item, h5py.Dataset) else None)
            attrs = {key: plain(value) for key, value in group.attrs.items()}
            runs.append(Run.from_attrs(name, attrs, RunArrays(names_=found, loader=_loader(path, name))))
    return Job.from_attrs(root, ranks, runs, path=path)


def first_line(error):
    """An exception's first line (its type's name when it has no text), for one-line usage errors."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def check_schema(path, schema):
    """UsageError unless `schema` names an mpirunner results schema this version reads."""
    if not schema.startswith(SCHEMA_PREFIX):
        raise UsageError(f"{path}: not an mpirunner results file (no '{SCHEMA}' schema attribute)")
    try:
        version = int(schema[len(SCHEMA_PREFIX):])
    except ValueError:
        raise UsageError(f"{path}: unknown schema '{schema}'; this report reads {SCHEMA}")
    if version > int(SCHEMA[len(SCHEMA_PREFIX):]):
        raise UsageError(f"{path}: schema {schema} is newer than {SCHEMA}, which this mpirunner reads; "
                         "upgrade mpirunner to report on it")


def load_job(path):
    """read_job for a reader: UsageError with one clear line for a missing, foreign, newer or damaged file."""
    import h5py

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
        return read_job(path)
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise UsageError(f"{path}: damaged or incomplete mpirunner file: {first_line(error)}")


@dataclass
class LightRun:
    """A run group read for a summary: its name, the attributes asked for, its histogram when asked for."""

    name: str
    attrs: dict
    histogram: Optional[Tuple[np.ndarray, np.ndarray]] = None


@dataclass
class LightFile:
    root: dict
    runs: List[LightRun] = field(default_factory=list)


def _attributes(node, wanted):
    """The node's attributes as plain Python: the `wanted` ones (each read costs ~0.1 ms), or all but the config."""
    names = [key for key in node.attrs if (key != "config" if wanted is None else key in wanted)]
    return {key: plain(node.attrs[key]) for key in names}


def read_light(path, root_names=None, run_names=None, histograms=False, config=False, twins=()):
    """Attributes alone, for summaries of many files: the wanted root and run-group attributes (None: all but the
    settings), and for each unit-less name in `twins` its twin when a run group lacks the name (twin names only)."""
    import h5py

    try:
        h5 = h5py.File(path, "r")
    except OSError as error:
        raise UsageError(f"not a readable HDF5 file: {first_line(error)}")
    with h5:
        check_schema(path, text_value(h5.attrs.get("schema", "")))
        try:
            root = _attributes(h5, root_names)
            if config:
                root["config"] = text_value(h5.attrs.get("config", ""))
            light = LightFile(root=root)
            for name, group in h5["runs"].items():
                attrs = _attributes(group, run_names)
                for key in twins:
                    twin = unit_name(key)
                    if key not in attrs and twin != key and twin in group.attrs:
                        attrs[twin] = plain(group.attrs[twin])
                histogram = ((group["histogram/counts"][()], group["histogram/edges"][()])
                             if histograms and "histogram" in group else None)
                light.runs.append(LightRun(name=name, attrs=attrs, histogram=histogram))
            return light
        except (KeyError, OSError, ValueError, TypeError) as error:
            raise UsageError(f"damaged or incomplete mpirunner file: {first_line(error)}")


def read_step_seconds(path, name):
    """Run group `name`'s step_seconds array ([ranks, steps], s) alone, None when it has none (a trend's rule)."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            group = h5["runs"][name]
            return group["step_seconds"][()] if "step_seconds" in group else None
    except (KeyError, OSError, ValueError, TypeError) as error:
        raise UsageError(f"{path}: damaged or incomplete mpirunner file: {first_line(error)}")
