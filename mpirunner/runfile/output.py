"""The output file, settled before any model is built (writable, room, with --resume the same measurement), and
its lock, one job per output (docs/failure-behaviour.md: "One job per output file", "The output is settled first").
"""
import atexit
import contextlib
import datetime
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from mpirunner.errors import UsageError
from mpirunner.runfile.names import parse_settings, stored_text
from mpirunner.runfile.run import Job

log = logging.getLogger("mpirunner")

# Settings that do not change a measurement: they may differ between a file and the job resuming it.
NOT_COMPARED = frozenset({"batch_sizes", "batch_size", "output", "overwrite", "resume", "log_level", "timeout",
                          "no_progress"})
LOCK_HEARTBEAT_SECONDS = 60
LOCK_STALE_SECONDS = 600  # 10 heartbeats missed: the owner on another host is taken to be gone
RUN_OVERHEAD_BYTES = 512 << 10  # attributes, histogram, per-rank values and HDF5 structure of one run group
MIB = 1 << 20


def estimate_file_bytes(config, world_size):
    """A conservative size of the finished file: every run's arrays at float64, plus overhead per run."""
    steps = config.iterations * (config.max_windows if config.until_stable else 1)
    if config.min_duration or config.find_peak_qps:
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


def resumed_job(earlier, resumed):
    """The earlier Job's root attributes, /ranks and runs, with this resumption (argv, time, hosts) appended."""
    attrs = {key: value for key, value in earlier.attrs().items() if key != "schema"}
    for key, value in (("resumed_argv", resumed.argv), ("resumed_created", resumed.created),
                       ("resumed_hosts", ",".join(resumed.hosts))):
        attrs[key] = [*attrs.get(key, []), value]
    return Job.from_attrs(attrs, [row.as_dict() for row in earlier.ranks], earlier.runs)


def read_earlier(path, config, layout):
    """The Job to resume, its arrays read (None when the file does not exist yet); UsageError when it measures
    something else or with another rank layout (layout: [(host, local_rank)] of this job's ranks)."""
    from mpirunner.runfile.hdf5 import read_job

    path = Path(path)
    if not path.exists():
        return None
    try:
        job = read_job(path)
        for run in job.runs:
            run.arrays.all()  # written back byte for byte: read now, while the file is the one checked
    except (OSError, KeyError) as error:
        raise UsageError(f"--resume: cannot read {path} as an mpirunner file ({error})") from None
    # this job's settings as the file stores them (YAML text), so that a tuple and a list compare equal
    stored, current = parse_settings(job.config_text), parse_settings(stored_text(config.settings()))
    differ = sorted(key for key in set(stored) | set(current)
                    if key not in NOT_COMPARED and stored.get(key) != current.get(key))
    if differ:
        shown = ", ".join(f"{key} ({stored.get(key)!r} in the file, {current.get(key)!r} now)" for key in differ)
        raise UsageError(f"--resume: {path} was measured with other settings: {shown}; "
                         "use the same settings or another --output")
    stored_size = int(job.world_size if job.world_size is not None else len(job.ranks))
    if stored_size != len(layout):
        raise UsageError(f"--resume: {path} was measured by {stored_size} rank(s), this job has {len(layout)}; "
                         "resume with the same number of ranks or use another --output")
    hosts, here = [row.host for row in job.ranks], [host for host, _local_rank in layout]
    if list(Counter(hosts).values()) != list(Counter(here).values()):  # ranks per host, in order of first appearance
        raise UsageError(f"--resume: {path} was measured with another rank layout "
                         f"({_describe(hosts)}; this job: {_describe(here)}); "
                         "resume with the same ranks per host or use another --output")
    return job


def _describe(hosts):
    return f"{len(hosts)} rank(s) on {len(set(hosts))} host(s)"


def output_path(config, now):
    """The file this job writes: --output, else results/<config or model>-<UTC time>.h5."""
    if config.output:
        return Path(config.output)
    return Path("results") / f"{config.name}-{now.strftime('%Y%m%dT%H%M%SZ')}.h5"


def lock_path(path):
    return Path(f"{path}.lock")


def _stat(pid, index, unknown):
    """Field `index` of /proc/<pid>/stat after the command name (0: the state, 19: the start time), else `unknown`."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[index]
    except (OSError, IndexError):
        return unknown


def _pid_started(pid):
    """The kernel's start time of `pid` (clock ticks since boot), '' where unknown: a reused pid differs."""
    return _stat(pid, 19, "")


def _alive(owner):
    """Whether the lock's owner (on this host) still runs: its pid exists, is not a zombie, started when it says."""
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True
    if _stat(owner["pid"], 0, "") == "Z":  # ended, waiting to be reaped (a killed job whose parent died too)
        return False
    started, now_started = owner.get("pid_started") or "", _pid_started(owner["pid"])
    return not (started and now_started) or started == now_started


def _stale(lock, owner, host, now, gone=None):
    """Why the lock no longer holds (a reason to print), or None while its owner may still be writing.
    gone: the owner record a rank of this job on the owner's host found no longer running (lock_owner_gone)."""
    if owner is None:
        return "an unreadable lock" if now - lock.stat().st_mtime > LOCK_STALE_SECONDS else None
    if owner.get("host") == host:
        return None if _alive(owner) else f"pid {owner.get('pid')} is no longer running on {host}"
    if gone is not None and gone == owner:
        return f"pid {owner.get('pid')} is no longer running on {owner.get('host')} (seen by a rank of this job there)"
    age = now - lock.stat().st_mtime
    if age > LOCK_STALE_SECONDS:
        return f"its heartbeat stopped {age / 60:.0f} min ago (over {LOCK_STALE_SECONDS // 60} min: stale)"
    return None


def lock_owner_gone(world, path):
    """Collective: the record of a lock on `path` from another host, when a rank of this job on that host finds
    its pid no longer running (a job whose rank 0's host was lost); else None."""
    owner = None
    if world.is_root:
        with contextlib.suppress(OSError, ValueError):
            owner = json.loads(lock_path(path).read_text())
    owner = world.bcast(owner if isinstance(owner, dict) and owner.get("host") != world.host else None)
    ended = owner is not None and owner.get("host") == world.host and not _alive(owner)
    return owner if world.any(ended) else None


HELD = {}  # this job's lock, on every rank: {"path": Path, "owner": rank 0's record}; release_lock removes it
_heartbeat = {}  # rank 0: {"stop": threading.Event} of the thread that refreshes the lock's mtime


def release_lock():
    """Remove this job's lock if it still holds this job's record: when the job ends on any rank, when a rank ends
    the job (the launcher may kill rank 0 before its exit handlers), and at exit."""
    if "stop" in _heartbeat:
        _heartbeat.pop("stop").set()
    lock, owner = HELD.pop("path", None), HELD.pop("owner", None)
    with contextlib.suppress(OSError, ValueError):
        if lock is not None and json.loads(lock.read_text()) == owner:
            lock.unlink()


def take_lock(path, host, argv=(), gone=None):
    """Rank 0: own `path` for this job (UsageError naming the live owner) -> the lock's path, or None when its
    folder cannot be written (check_output says so)."""
    lock = lock_path(path)
    mine = {"host": host, "pid": os.getpid(), "pid_started": _pid_started(os.getpid()),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "job": os.environ.get("SLURM_JOB_ID", ""), "argv": " ".join(argv)}
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    for _ in range(3):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = None
            with contextlib.suppress(OSError, ValueError):
                owner = json.loads(lock.read_text())
            owner = owner if isinstance(owner, dict) else None
            try:
                why = _stale(lock, owner, host, time.time(), gone)
            except FileNotFoundError:
                continue  # the owner just released it
            if why is None:
                who = (f"host {owner.get('host')}, pid {owner.get('pid')}, started {owner.get('started')}"
                       + (f", SLURM job {owner['job']}" if owner.get("job") else "")) if owner else "unknown"
                raise UsageError(f"output {path} is being written by another job ({who}; lock {lock}); wait for it "
                                 "to finish or choose another --output (--overwrite and --resume do not override a "
                                 "running job)")
            log.warning("output %s: taking over the lock of an earlier job (%s): %s", path,
                        f"host {owner.get('host')}, pid {owner.get('pid')}" if owner else "unreadable", why)
            lock.unlink(missing_ok=True)
            continue
        except OSError:
            return None
        with os.fdopen(descriptor, "w") as handle:
            json.dump(mine, handle)
        _hold(lock, mine)
        return lock
    raise UsageError(f"output {path}: could not take its lock {lock} (other jobs keep taking it)")


def _hold(lock, mine):
    """Refresh the lock's mtime while the job runs (a heartbeat); release_lock ends it and removes the lock."""
    stop = threading.Event()

    def heartbeat():
        while not stop.wait(LOCK_HEARTBEAT_SECONDS):
            try:
                os.utime(lock)
            except OSError:
                return

    HELD.update(path=lock, owner=mine)
    _heartbeat["stop"] = stop
    threading.Thread(target=heartbeat, name="mpirunner-output-lock", daemon=True).start()
    atexit.unregister(release_lock)  # once, however many jobs this process runs (tests run some in-process)
    atexit.register(release_lock)


def settle_output(world, config, created):
    """Collective, before any model is built: the path, locked and checked on rank 0 and agreed, and with --resume
    the earlier file (rank 0) and the batch sizes it already measured (every rank; a failed one runs again)."""
    path = world.bcast(str(output_path(config, created)) if world.is_root else None)
    gone = lock_owner_gone(world, path)  # a lock from another host whose job is over: a rank there sees it
    world.agree(lambda: take_lock(path, world.host, config.argv, gone) if world.is_root else None)  # live owner: exit 2
    HELD.update(world.bcast(dict(HELD) if world.is_root else None))  # any rank that ends the job removes it
    world.agree(lambda: check_output(path, config, world.size) if world.is_root else None)
    layout = world.gather((world.host, world.local_rank))
    earlier = world.agree(lambda: read_earlier(path, config, layout) if world.is_root and config.resume else None)
    measured = sorted({int(run.point.batch_size) for run in earlier.measured_runs}) if earlier else []
    return path, earlier, set(world.bcast(measured))
