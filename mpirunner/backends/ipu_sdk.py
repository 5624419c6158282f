"""What the Poplar SDK's libraries do that the IPU backend follows, read from their sources (docs/ipu.md cites
each). Imports nothing from the SDK at import."""
import json
import logging
import os
import re
import tempfile
from collections.abc import Sequence

from mpirunner.errors import UsageError

log = logging.getLogger("mpirunner")

MIN_LATENCY_ENGINE_OPTIONS = {"exchange.enablePrefetch": "false"}  # the reference README's low-latency advice
UNKNOWN_HARDWARE_VERSION = -1  # what poptorch.ipuHardwareVersion() returns when it cannot tell

CACHE_VARIABLE = "POPTORCH_CACHE_DIR"  # read by poptorch.Options()'s constructor (options.py, 2.4 and 3.4)
CACHE_DEFAULT = "default"


def default_cache_path():
    """Host-local executable cache under poprun with every instance on one host and no --model-cache-path."""
    return os.path.join(tempfile.gettempdir(), f"mpirunner-ipu-cache-{os.getuid()}")


def init_popdist(popdist):
    """Initialise popdist's backend once where the SDK has it (3.x, after MPI_Init); returns what happened."""
    if not hasattr(popdist, "init"):
        return "absent (SDK 2.x)"
    if getattr(popdist, "isBackendInitialized", lambda: False)():
        return "already initialised"
    popdist.init()
    return "called after MPI_Init"


def engine_options_from_env(environ, min_latency):
    """POPLAR_ENGINE_OPTIONS as the engine will read it: the user's JSON, with --min-latency's merged in."""
    text = environ.get("POPLAR_ENGINE_OPTIONS", "")
    user_options = {}
    if text.strip():
        try:
            user_options = json.loads(text)
        except ValueError:
            raise UsageError(f"POPLAR_ENGINE_OPTIONS is not valid JSON: {text!r}") from None
        if not isinstance(user_options, dict):
            raise UsageError(f"POPLAR_ENGINE_OPTIONS must be a JSON object, not {text!r}")
    if not min_latency:
        return user_options
    for key, value in MIN_LATENCY_ENGINE_OPTIONS.items():
        if key in user_options and str(user_options[key]).lower() != value:
            log.warning("--min-latency overrides POPLAR_ENGINE_OPTIONS %s=%s with %s", key, user_options[key], value)
    return {**user_options, **MIN_LATENCY_ENGINE_OPTIONS}


def sdk_version_from_path(sdk_path):
    """Version from the SDK folder name that POPLAR_SDK_ENABLED points into ('' when unknown)."""
    match = re.search(r"(\d+\.\d+\.\d+(?:\+\d+)?)", sdk_path or "")
    return match.group(1) if match else ""


def hardware_version_text(version):
    """ipuHardwareVersion() for the file: 'unknown' for -1, '' without hardware."""
    if version is None:
        return ""
    return "unknown" if version == UNKNOWN_HARDWARE_VERSION else str(version)


def nan_extreme(pick, values):
    return pick((value for value in values if value == value), default=float("nan"))


def buffering_depth_option(popart_version):
    """PopART's IO buffering depth option: defaultBufferingDepth from 2.5 on, else (or unknown) the older name."""
    return "defaultBufferingDepth" if tuple(popart_version[:2]) >= (2, 5) else "defaultPrefetchBufferingDepth"


def popart_version():
    """(versionNumber() as (major, minor, point), versionString()) of popart; ((), '') when it does not import."""
    try:
        import popart
    except ImportError:
        return (), ""
    return tuple(int(part) for part in popart.versionNumber()), str(popart.versionString())


class LatencyReading(Sequence):
    """A step's one batch latency, [getLatency()'s average], read when first looked at (after bench.py stopped its
    clock, as the reference does: docs/ipu.md) and then appended once to the batch size's (min, max, avg) list."""

    def __init__(self, inference_model, readings):
        self._model, self._readings, self._seconds = inference_model, readings, None

    def expire(self):
        """Never read it now: the model has run again (or is gone), so getLatency() would describe another call."""
        if self._seconds is None:
            self._model = None

    def value(self):
        if self._seconds is None:
            if self._model is None:
                raise RuntimeError("this step's getLatency() was not read before the model ran again")
            min_seconds, max_seconds, avg_seconds = self._model.getLatency()
            self._readings.append((float(min_seconds), float(max_seconds), float(avg_seconds)))
            self._seconds = float(avg_seconds)
        return self._seconds

    def __len__(self):
        return 1

    def __getitem__(self, index):
        return [self.value()][index]

    def __eq__(self, other):
        return list(self) == list(other) if isinstance(other, (list, tuple, LatencyReading)) else NotImplemented


def choose_cache(config, world, under_poprun, environ):
    """(executable cache directory or None, where it came from): --model-cache-path, then POPTORCH_CACHE_DIR, then
    the host-local default, only for a poprun job on one host (docs/ipu.md: poptorch's compile lock)."""
    if config.model_cache_path:
        return config.model_cache_path, "--model-cache-path"
    if environ.get(CACHE_VARIABLE):
        return environ[CACHE_VARIABLE], CACHE_VARIABLE
    if not under_poprun or world.local_size <= 1:
        return None, ""
    if world.local_size < world.size:
        if world.is_root:
            log.warning("poprun runs %d instances on several hosts and no executable cache is set: every "
                        "instance compiles each batch size at once; give --model-cache-path (or "
                        "POPTORCH_CACHE_DIR) a folder that every host shares (docs/ipu.md)", world.size)
        return None, ""
    return default_cache_path(), CACHE_DEFAULT


def warn_if_cache_not_shared(world, cache_path):
    """A job on several hosts: one warning names the hosts that do not see a file rank 0 wrote into the cache."""
    if not cache_path or world.local_size >= world.size:
        return
    marker = ""
    if world.is_root:
        try:
            os.makedirs(cache_path, exist_ok=True)
            marker = os.path.join(cache_path, f".mpirunner-shared-{os.getpid()}-{os.urandom(4).hex()}")
            open(marker, "w").close()
        except OSError:  # not writable: poptorch says so when it compiles; no rank may wait here
            marker = ""
    marker = world.bcast(marker)  # after rank 0 wrote it
    if not marker:
        return
    seen = world.allgather((world.host, os.path.exists(marker)))
    if world.is_root:
        os.remove(marker)
        blind = sorted({host for host, found in seen if not found})
        if blind:
            log.warning("executable cache %s is not one folder shared by every host (%s do(es) not see a file "
                        "rank 0 wrote there): poptorch's compile lock counts all %d instances in one file, so "
                        "its lock files will stay and instances compile at once; use a folder every host shares",
                        cache_path, ", ".join(blind), world.size)


def warn_about_stale_locks(world, cache_path):
    """Name poptorch compile-lock files already in the cache before this job compiles (docs/ipu.md)."""
    if not (world.is_root and cache_path and world.size > 1 and os.path.isdir(cache_path)):
        return
    found = sorted(name for name in os.listdir(cache_path) if name.endswith(".lock"))
    if found:
        log.warning("poptorch compile lock(s) already in %s before compiling: %s (a job killed while compiling "
                    "leaves them; then every instance compiles at once): remove them if no other job uses "
                    "this cache now", cache_path, ", ".join(found))


def reference_latency(readings):
    """This rank's (mean of the averages, min, max) in ms over EVERY call's getLatency(), as the reference's."""
    if not readings:
        return float("nan"), float("nan"), float("nan")
    return (1000.0 * sum(r[2] for r in readings) / len(readings), 1000.0 * min(r[0] for r in readings),
            1000.0 * max(r[1] for r in readings))
