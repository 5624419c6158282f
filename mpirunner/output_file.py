"""The output file, settled before any model is built: can it be written, is there room, and with
--resume, what does it already hold and does this job measure the same thing?

An unwritable --output found after an hour of benchmarking loses the hour; so rank 0 tries it first
(makes the folder, creates and removes a probe file, compares free space with a generous estimate).
--resume continues a sweep in an existing file: the sizes it holds are skipped, the stored runs are
written back unchanged (their arrays byte for byte), and the root attributes keep the first job's
values plus one entry per resumption (resumed_argv, resumed_created, resumed_hosts).
"""
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

from mpirunner.errors import UsageError

# Settings that do not change a measurement: they may differ between a file and the job resuming it.
NOT_COMPARED = frozenset({"batch_sizes", "batch_size", "output", "overwrite", "resume", "log_level", "timeout",
                          "no_progress"})
RUN_OVERHEAD_BYTES = 512 << 10  # attributes, histogram, per-rank values and HDF5 structure of one run group
MIB = 1 << 20


def estimate_file_bytes(config, world_size):
    """A conservative size of the finished file: every run's arrays at float64, plus overhead per run."""
    steps = config.iterations * (config.max_windows if config.until_stable else 1)
    if config.min_duration:
        steps = max(steps, 100_000)  # unknown in advance: assume a long one
    per_step = 8 * (2 + config.device_iterations * config.replicas)  # start, duration, micro-batch latencies
    return len(config.batch_sizes) * (world_size * steps * per_step + RUN_OVERHEAD_BYTES)


def check_output(path, config, world_size):
    """Raise UsageError (rank 0, before any work) when `path` cannot, may not or will not fit to be written."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"--output {path} is a directory; give a file name ending in .h5")
    if path.exists() and not (config.overwrite or config.resume):
        raise UsageError(f"output {path} already exists; pass --resume to continue its sweep, --overwrite to "
                         "replace it, or choose another --output")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.probe-"):
            pass
    except OSError as error:
        why = "a file is in the way" if isinstance(error, (FileExistsError, NotADirectoryError)) else \
            (error.strerror or str(error)).lower()
        raise UsageError(f"cannot write output {path}: folder {folder} is not writable ({why})") from None
    needed = 2 * estimate_file_bytes(config, world_size)  # the old file and its replacement exist side by side
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise UsageError(f"output {path}: {free / MIB:.0f} MiB free in {folder}, but the file may need up to "
                         f"{needed / MIB:.0f} MiB; free some space or choose another --output")


@dataclass
class Earlier:
    """What an existing file holds for --resume (rank 0): its root attributes, /ranks rows and runs."""

    root_attrs: dict
    rank_rows: List[dict]
    runs: Dict[str, object] = field(default_factory=dict)   # name -> RunResult, as stored

    @property
    def measured_sizes(self):
        """Batch sizes with a measured run (a failed size is tried again)."""
        return {int(run.attrs["batch_size"]) for run in self.runs.values() if run.attrs.get("status") != "failed"}

    def root_attrs_after(self, resumed_attrs):
        """The first job's root attributes, with this resumption appended (argv, time, hosts)."""
        attrs = {key: value for key, value in self.root_attrs.items() if key != "schema"}
        for key, value in (("resumed_argv", resumed_attrs["argv"]), ("resumed_created", resumed_attrs["created"]),
                           ("resumed_hosts", ",".join(resumed_attrs["hosts"]))):
            earlier = attrs.get(key) or []
            attrs[key] = [*([earlier] if isinstance(earlier, str) else earlier), value]
        return attrs


def _comparable(settings):
    """Settings as the file stores them (YAML text of the dict), so that a tuple and a list compare equal."""
    import yaml

    text = yaml.safe_dump(settings, sort_keys=True) if isinstance(settings, dict) else settings
    return yaml.safe_load(text) or {}


def read_earlier(path, config, layout):
    """The file to resume (None when it does not exist yet); UsageError when it measures something else.

    layout: [(host, local_rank)] of this job's ranks; the world size and ranks per host must match.
    """
    from mpirunner.results import RunResult, TIMING_ARRAYS, read_results

    path = Path(path)
    if not path.exists():
        return None
    try:
        data = read_results(path)
    except (OSError, KeyError) as error:
        raise UsageError(f"--resume: cannot read {path} as an mpirunner file ({error})") from None
    stored = _comparable(data["attrs"].get("config", ""))
    current = _comparable(config.settings())
    differ = sorted(key for key in set(stored) | set(current)
                    if key not in NOT_COMPARED and stored.get(key) != current.get(key))
    if differ:
        shown = ", ".join(f"{key} ({stored.get(key)!r} in the file, {current.get(key)!r} now)" for key in differ)
        raise UsageError(f"--resume: {path} was measured with other settings: {shown}; "
                         "use the same settings or another --output")
    stored_size = int(data["attrs"].get("world_size", len(data["ranks"])))
    if stored_size != len(layout):
        raise UsageError(f"--resume: {path} was measured by {stored_size} rank(s), this job has {len(layout)}; "
                         "resume with the same number of ranks or use another --output")
    if _per_host(data["ranks"]) != _per_host([{"host": h, "local_rank": r} for h, r in layout]):
        raise UsageError(f"--resume: {path} was measured with another rank layout "
                         f"({_describe(data['ranks'])}; this job: {_describe([{'host': h} for h, _ in layout])}); "
                         "resume with the same ranks per host or use another --output")
    earlier = Earlier(root_attrs=data["attrs"], rank_rows=data["ranks"])
    for name, run in data["runs"].items():
        arrays = {key: run[key] for key in (*TIMING_ARRAYS, "compile_seconds") if key in run}
        extra = {key: value for key, value in run.items() if key != "attrs" and key not in arrays}
        earlier.runs[name] = RunResult(name=name, attrs=run["attrs"], extra_datasets=extra, **arrays)
    return earlier


def _per_host(rows):
    """Ranks per host, in rank order of first appearance: the layout that must not change on resume."""
    counts = {}
    for row in rows:
        counts[row["host"]] = counts.get(row["host"], 0) + 1
    return list(counts.values())


def _describe(rows):
    per_host = _per_host(rows)
    return f"{sum(per_host)} rank(s) on {len(per_host)} host(s)"



def settle_output(world, config, created):
    """Collective, before any model is built: the path (rank 0 decides), checked on rank 0 and agreed,
    and with --resume the earlier file (rank 0) and the batch sizes it already holds (every rank)."""
    from mpirunner.results import output_path

    path = world.bcast(str(output_path(config, created)) if world.is_root else None)
    world.agree(lambda: check_output(path, config, world.size) if world.is_root else None)
    layout = world.gather((world.host, world.local_rank))
    earlier = world.agree(lambda: read_earlier(path, config, layout) if world.is_root and config.resume else None)
    return path, earlier, set(world.bcast(sorted(earlier.measured_sizes) if earlier else []))
