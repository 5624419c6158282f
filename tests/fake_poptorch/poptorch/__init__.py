"""A recording stand-in for poptorch, for tests only (never installed, never shipped).

poptorch ships only with the Poplar SDK, so mpirunner's IPU backend is tested against this module.
It implements the slice of poptorch's documented API the backend uses, with poptorch's own argument
checks where they matter (numIOTiles: even, 32..192; partials: float16/float32), and records every
call: in `RECORD` (this process) and, when FAKE_POPTORCH_RECORD names a file, as one JSON line per
call in that file (so tests can read what a `python -m mpirunner` subprocess did).

Behaviour switches (environment):
  FAKE_POPTORCH_HARDWARE=0      ipuHardwareIsAvailable() is False (default: True), ipuHardwareVersion() asserts
  FAKE_POPTORCH_HW_VERSION=N    what ipuHardwareVersion() returns with hardware (default 2; -1: unknown)
  FAKE_POPTORCH_SDK=2|3         the SDK generation (default 3): with 2, popdist has no init() and the
                                versions read 2.4.0+fake
  FAKE_POPTORCH_RECORD=PATH     append every recorded call to PATH as JSON lines

As strict as the real library where a mistake would hide: poptorch.Options() reads Open MPI's
OMPI_COMM_WORLD_SIZE/RANK into its distributed options (until Distributed.disable()), whose processId and
numProcesses are values, and POPTORCH_CACHE_DIR (caching on); the graph a compile records says how many
processes it spans; a distributed compile into a cache takes poptorch's compile lock (a file per model in
the cache folder, see _compile_lock); ipuHardwareVersion() asserts without IPUs; getLatency() with
synthetic data returns numbers without meaning; a destroyed model refuses every later call. An
inference model computes its outputs with the wrapped torch model on the CPU, in float32 for speed (a
float16 model is copied to float32 and its outputs cast back to float16); getLatency() otherwise
reports numbers derived from the wall time of the last call.
"""
import contextlib
import copy
import enum
import fcntl
import hashlib
import json
import os
import time

import torch

SDK = os.environ.get("FAKE_POPTORCH_SDK", "3")
__version__ = "2.4.0+fake" if SDK == "2" else "3.3.0+fake"

RECORD = []
_TRACING = []  # non-empty while compile traces the model: the wrappers are recorded once per compile


def _plain(value):
    """A JSON-friendly form of a recorded argument."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, torch.dtype):
        return str(value)
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, torch.Tensor):
        return {"tensor": str(value.dtype), "shape": list(value.shape)}
    return type(value).__name__


def _record(call, *args, **kwargs):
    event = {"call": call, "args": [_plain(arg) for arg in args],
             "kwargs": {key: _plain(item) for key, item in kwargs.items()}}
    RECORD.append(event)
    path = os.environ.get("FAKE_POPTORCH_RECORD")
    if path:
        rank = os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK", "0"))
        with open(path, "a") as record_file:
            record_file.write(json.dumps({**event, "pid": os.getpid(), "rank": int(rank)}) + "\n")
    return event


def calls(prefix=""):
    """The recorded calls (of this process) whose name starts with prefix."""
    return [event for event in RECORD if event["call"].startswith(prefix)]


def ipuHardwareIsAvailable(num_ipus=1):
    return os.environ.get("FAKE_POPTORCH_HARDWARE", "1") != "0"


def ipuHardwareVersion():
    """Like poptorch's (__init__.py, 2.4 and 3.4): asserts when the system has no IPU, -1 when unknown."""
    version = int(os.environ.get("FAKE_POPTORCH_HW_VERSION", "2")) if ipuHardwareIsAvailable() else 0
    assert version != 0, "No IPU hardware available on this system"
    return version


class OverlapMode(enum.Enum):
    NoOverlap = "no_overlap"
    OverlapAccumulationLoop = "overlap_accumulation_loop"
    OverlapDeviceIterationLoop = "overlap_device_iteration_loop"


class _IExecutionStrategy:
    pass


class PipelinedExecution(_IExecutionStrategy):
    def __init__(self, *args):
        self.args = args


class ShardedExecution(PipelinedExecution):
    pass


class _Precision:
    def __init__(self, options):
        self._options = options

    def setPartialsType(self, dtype):
        if dtype not in (torch.float16, torch.float32):
            raise ValueError(f"setPartialsType accepts torch.float16 or torch.float32, not {dtype}")
        _record("Options.Precision.setPartialsType", dtype)
        self._options.values["partials_type"] = dtype
        return self


class _TensorLocations:
    def __init__(self, options):
        self._options = options

    def numIOTiles(self, num_tiles):
        assert isinstance(num_tiles, int) and not isinstance(num_tiles, bool)
        assert 32 <= num_tiles <= 192 and num_tiles % 2 == 0, "numIOTiles must be an even number between 32 and 192."
        _record("Options.TensorLocations.numIOTiles", num_tiles)
        self._options.values["num_io_tiles"] = num_tiles
        return self


class _PopartOptions:
    def __init__(self, options):
        self._options = options

    def set(self, key, value):
        _record("Options._Popart.set", key, value)
        self._options.values.setdefault("popart", {})[key] = value
        return self


class _DistributedOptions:
    """Options.Distributed: like poptorch's, it starts from Open MPI's OMPI_COMM_WORLD_SIZE/RANK."""

    def __init__(self, options):
        self._options = options
        options.values["num_distributed_processes"] = int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))
        options.values["distributed_process_id"] = int(os.environ.get("OMPI_COMM_WORLD_RANK", "0"))

    @property
    def processId(self):
        return self._options.values["distributed_process_id"]

    @property
    def numProcesses(self):
        return self._options.values["num_distributed_processes"]

    def disable(self):
        _record("Options.Distributed.disable")
        self._options.values.update(num_distributed_processes=1, distributed_process_id=0)
        return self._options

    def configureProcessId(self, process_id, process_count):
        _record("Options.Distributed.configureProcessId", process_id, process_count)
        self._options.values.update(num_distributed_processes=process_count, distributed_process_id=process_id)
        return self._options


class Options:
    """poptorch.Options: every call is recorded; unknown methods raise AttributeError as usual."""

    def __init__(self):
        self.values = {"replication_factor": 1, "device_iterations": 1}
        self.Precision = _Precision(self)
        self.TensorLocations = _TensorLocations(self)
        self._Popart = _PopartOptions(self)
        self.Distributed = _DistributedOptions(self)
        if os.environ.get("POPTORCH_CACHE_DIR"):  # as poptorch's constructor: caching on from the variable
            self.values["executable_cache"] = os.environ["POPTORCH_CACHE_DIR"]
        if type(self) is Options:
            _record("poptorch.Options")

    @property
    def replication_factor(self):
        return self.values["replication_factor"]

    @property
    def device_iterations(self):
        return self.values["device_iterations"]

    def deviceIterations(self, device_iterations):
        assert isinstance(device_iterations, int) and device_iterations >= 1
        _record("Options.deviceIterations", device_iterations)
        self.values["device_iterations"] = device_iterations
        return self

    def replicationFactor(self, replication_factor):
        assert isinstance(replication_factor, int) and replication_factor >= 1
        _record("Options.replicationFactor", replication_factor)
        self.values["replication_factor"] = replication_factor
        return self

    def setExecutionStrategy(self, strategy):
        assert isinstance(strategy, _IExecutionStrategy)
        _record("Options.setExecutionStrategy", strategy)
        self.values["execution_strategy"] = type(strategy).__name__
        return self

    def enableExecutableCaching(self, path):
        _record("Options.enableExecutableCaching", path)
        self.values["executable_cache"] = path
        return self

    def enableSyntheticData(self, enabled):
        assert isinstance(enabled, bool)
        _record("Options.enableSyntheticData", enabled)
        self.values["synthetic_data"] = enabled
        return self

    def useIpuId(self, ipu_id):
        assert isinstance(ipu_id, int)
        _record("Options.useIpuId", ipu_id)
        self.values["ipu_id"] = ipu_id
        return self

    def useOfflineIpuTarget(self, ipu_version=2):
        assert isinstance(ipu_version, int)
        _record("Options.useOfflineIpuTarget", ipu_version)
        self.values["offline_ipu_version"] = ipu_version
        return self


def set_overlap_for_input(input_tensors, mode):
    assert isinstance(mode, OverlapMode)
    if _TRACING:
        _record("set_overlap_for_input", input_tensors, mode)
    return input_tensors


def set_overlap_for_output(output_tensors, mode):
    assert isinstance(mode, OverlapMode)
    if _TRACING:
        _record("set_overlap_for_output", output_tensors, mode)
    return output_tensors


def _model_dtype(model):
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def _for_cpu(inputs):
    """Float inputs in float32 for the CPU copy of the model; uint8 stays uint8 (the model normalises it)."""
    return inputs.float() if inputs.is_floating_point() else inputs


@contextlib.contextmanager
def _compile_lock(model, options):
    """poptorch's distributedCacheLock (_impl.py, 2.4 and 3.4): with more than one process and a cache, a lock
    file named after the model (md5 of its repr; never the batch size) in the cache folder; each process appends
    one character under an exclusive flock, its position says whether it compiles first (1) and the process
    whose position equals numProcesses deletes the file. Yields the position (0: no lock)."""
    cache = options.values.get("executable_cache")
    if options.values["num_distributed_processes"] <= 1 or not cache:
        yield 0
        return
    os.makedirs(cache, exist_ok=True)
    name = os.path.join(cache, hashlib.md5(repr(model).encode("utf-8")).hexdigest() + ".lock")
    delete = False
    try:
        with open(name, "a+") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                lock_file.write("0")
                lock_file.flush()
                position = lock_file.tell()
                delete = position == options.values["num_distributed_processes"]
                yield position
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)
    finally:
        if delete:
            os.remove(name)


class PoplarExecutor:
    """What poptorch.inferenceModel returns: compile(), __call__, getLatency(), attach/detach."""

    def __init__(self, model, options):
        self.model = model
        self.options = options
        self.compiled_shape = None
        self.last_latency = None
        self.attached = False
        self.dtype = _model_dtype(model)
        self._cpu_model = None
        self.destroyed = False

    def _alive(self):
        if self.destroyed:
            raise RuntimeError("the model was destroyed")

    def _check_input(self, inputs):
        micro_batch_groups = self.options.device_iterations * self.options.replication_factor
        if inputs.shape[0] % micro_batch_groups:
            raise ValueError(f"input batch dimension {inputs.shape[0]} is not a multiple of device iterations x "
                             f"replication factor ({micro_batch_groups})")

    def _build(self, inputs, how):
        self._check_input(inputs)
        with _compile_lock(self.model, self.options) as position:
            self._compile_under_lock(inputs, how, position)

    def _check_popart_options(self):
        """PopART's session options as the installed version knows them (willow/src/sessionoptions.cpp): 2.4
        has no defaultBufferingDepth; from 2.5 on the old defaultPrefetchBufferingDepth logs a deprecation."""
        import popart

        names = self.options.values.get("popart", {})
        if popart.versionNumber() < (2, 5, 0) and "defaultBufferingDepth" in names:
            raise RuntimeError("popart: unknown session option defaultBufferingDepth")
        if popart.versionNumber() >= (2, 5, 0) and "defaultPrefetchBufferingDepth" in names:
            _record("popart.warning", "The session option defaultPrefetchBufferingDepth has been deprecated")

    def _compile_under_lock(self, inputs, how, lock_position):
        self._check_popart_options()
        _record(how, inputs, lock_position=lock_position, model_dtype=self.dtype,
                replication_factor=self.options.replication_factor,
                device_iterations=self.options.device_iterations, options=self.options.values,
                poplar_engine_options=os.environ.get("POPLAR_ENGINE_OPTIONS", ""))
        self._cpu_model = copy.deepcopy(self.model).float().eval()
        _TRACING.append(True)
        try:  # poptorch traces the model once, with one micro-batch of the input; so does the stand-in
            micro_batch = inputs.shape[0] // (self.options.device_iterations * self.options.replication_factor)
            with torch.no_grad():
                self._cpu_model(_for_cpu(inputs[:micro_batch]))
        finally:
            _TRACING.pop()
        self.compiled_shape = tuple(inputs.shape)
        self.attached = "offline_ipu_version" not in self.options.values

    def compile(self, *args):
        self._alive()
        self._build(args[0], "PoplarExecutor.compile")

    def __call__(self, *args):
        self._alive()
        inputs = args[0]
        if self.compiled_shape is None:
            self._build(inputs, "PoplarExecutor.implicit_compile")
        if not self.attached:
            raise RuntimeError("the executor is not attached to an IPU (offline target or detached)")
        if tuple(inputs.shape) != self.compiled_shape:
            raise ValueError(f"input shape {tuple(inputs.shape)} differs from the compiled {self.compiled_shape}")
        _record("PoplarExecutor.__call__", inputs)
        start = time.perf_counter()
        with torch.no_grad():
            outputs = self._cpu_model(_for_cpu(inputs))
        elapsed = time.perf_counter() - start
        average = elapsed / self.options.device_iterations
        if self.options.values.get("synthetic_data"):
            # No host IO: the 3.4 reference only says "ignore these latency values"; what the real
            # getLatency() returns then is not documented, so the stand-in returns numbers with no meaning.
            average = 1e-3 * (1 + len(RECORD) % 7)
        self.last_latency = (0.9 * average, 1.2 * average, average)
        return outputs.to(self.dtype)

    def getLatency(self):
        self._alive()
        if self.last_latency is None:
            raise RuntimeError("getLatency() needs a run of the model first")
        return self.last_latency

    def isAttachedToDevice(self):
        self._alive()
        return self.attached

    def destroy(self):
        """Release the IPUs and the executable; the model is unusable afterwards."""
        self._alive()
        _record("PoplarExecutor.destroy")
        self.attached = False
        self.destroyed = True
        self._cpu_model = None

    def detachFromDevice(self):
        self._alive()
        if not self.attached:
            raise RuntimeError("the executor is not attached")
        _record("PoplarExecutor.detachFromDevice")
        self.attached = False

    def attachToDevice(self):
        self.attached = True


def inferenceModel(model, options=None):
    assert isinstance(model, torch.nn.Module)
    options = Options() if options is None else options
    assert isinstance(options, Options)
    _record("poptorch.inferenceModel", type(model).__name__, options_type=type(options).__module__ + "." +
            type(options).__name__)
    return PoplarExecutor(model, options)
