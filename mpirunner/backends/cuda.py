"""CUDA backend: one GPU per rank, NUMA-near placement, float16, CUDA graphs, torch.compile, overlapped IO.

Imported only when the job uses CUDA (backends.create_backend), so CPU-only runs never touch CUDA.

Who gets which GPU: each rank takes `local rank % visible GPUs` among the GPUs it can see (so
CUDA_VISIBLE_DEVICES is respected, also when a launcher gives each rank its own). The ranks then
compare what they chose (one allgather): two ranks of a host on one GPU is an error unless
--allow-gpu-sharing, and every rank raises the same error, so none is left waiting.

A step (one host iteration = device_iterations micro-batches) runs on the rank's compute stream:
host input -> pinned buffer -> non-blocking copy -> forward of each micro-batch between two CUDA
events -> outputs copied back to pinned host memory -> synchronise. bench.py times the whole call
on the host, so step time always includes the device work; the events give each micro-batch's
device latency. Options:

- --cuda-graphs: the whole step (all micro-batches) is captured once, in the first call, and replayed.
- --compile inductor: torch.compile through backends/compiling.py (shared with the CPU backend); compiled in the first call.
- IO overlap (default with --data generated and real, off with --min-latency): the copy of the input
  handed to step N runs on a side stream while the forward of step N-1's input runs, the CUDA analogue
  of IPU IO tiles. The outputs a step returns are therefore those of the previous step's input (the
  first call computes its own input, which the second step computes again); real data's accuracy pairs
  them with that input's labels (data.RealInput). Synthetic data is on the device already.
- Both host sources come pinned (data.py makes them with `pin`, before timing), so a step copies them
  without staging. The step returns one pinned host output buffer, reused by the next call
  (`reuses_outputs`): whoever keeps outputs must copy them.
"""
import ctypes
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

import torch

from mpirunner.backends.base import Backend
from mpirunner.backends.compiling import compile_module
from mpirunner.errors import UsageError

log = logging.getLogger("mpirunner")

GRAPH_WARMUP_CALLS = 3  # forward passes on a side stream before capture, as the CUDA graphs docs ask
DEVICE_TYPE = "cuda"  # tests run the backend's wiring on a CPU double of torch.cuda with "cpu" here


# ---------------------------------------------------------------- which GPU (pure, tested without a GPU)

@dataclass(frozen=True)
class GpuView:
    """What one rank sees: its place on its host and the identities (UUID or PCI id) of its visible GPUs."""

    rank: int
    host: str
    local_rank: int
    local_size: int
    visible: Tuple[str, ...]
    visibility: str  # 'CUDA_VISIBLE_DEVICES=...' or '... unset', for messages
    no_gpu_reason: str = ""


def describe_visibility(environ=None):
    env = os.environ if environ is None else environ
    value = env.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return "CUDA_VISIBLE_DEVICES unset"
    return f"CUDA_VISIBLE_DEVICES='{value}'"


def gpu_index_for_rank(local_rank, device_count):
    """Index among this rank's visible GPUs: its local rank modulo their count."""
    if device_count < 1:
        raise UsageError("--device cuda: no CUDA GPU is visible")
    return local_rank % device_count


def plan_gpus(views, allow_sharing):
    """Each rank's GPU index (in rank order), identical on every rank given the same views.

    UsageError when a rank sees no GPU, or, without --allow-gpu-sharing, when two ranks of one host
    would use the same GPU (more local ranks than visible GPUs).
    """
    indices = []
    for view in views:
        if not view.visible:
            reason = f" ({view.no_gpu_reason})" if view.no_gpu_reason else ""
            raise UsageError(f"--device cuda: no CUDA GPU is visible to rank {view.rank} on host {view.host}"
                             f"{reason}; use --device cpu, or auto to pick what is there")
        indices.append(gpu_index_for_rank(view.local_rank, len(view.visible)))
    owners = {}
    for view, index in zip(views, indices):
        key = (view.host, view.visible[index])
        if key in owners and not allow_sharing:
            first = owners[key]
            raise UsageError(
                f"--device cuda: {view.local_size} ranks on host {view.host} but {len(view.visible)} visible GPU(s) "
                f"({view.visibility}): local ranks {first.local_rank} and {view.local_rank} would share GPU {index}; "
                f"start at most {len(view.visible)} ranks per host or pass --allow-gpu-sharing")
        owners.setdefault(key, view)
    return indices


def shared_gpus(views, indices):
    """{(host, gpu id): [ranks]} for GPUs used by more than one rank (only with --allow-gpu-sharing)."""
    users = {}
    for view, index in zip(views, indices):
        users.setdefault((view.host, view.visible[index]), []).append(view.rank)
    return {key: ranks for key, ranks in users.items() if len(ranks) > 1}


# ---------------------------------------------------------------- facts about a GPU (pure where possible)

def pci_id(properties):
    """'0000:3b:00.0' (the sysfs name) from torch's device properties, or '' when torch does not report it."""
    try:
        return f"{properties.pci_domain_id:04x}:{properties.pci_bus_id:02x}:{properties.pci_device_id:02x}.0"
    except AttributeError:
        return ""


def numa_node_of_pci_device(pci, sysfs_root="/sys"):
    """NUMA node a PCI device hangs on (/sys/bus/pci/devices/<pci>/numa_node), None when unknown or -1."""
    if not pci:
        return None
    try:
        node = int((Path(sysfs_root) / "bus" / "pci" / "devices" / pci / "numa_node").read_text().strip())
    except (OSError, ValueError):
        return None
    return node if node >= 0 else None


_DRIVER_LINE = re.compile(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+(?:\.\d+)+)")


def parse_nvidia_driver_version(text):
    """The driver version from /proc/driver/nvidia/version's text ('' when absent)."""
    match = _DRIVER_LINE.search(text or "")
    return match.group(1) if match else ""


def nvidia_driver_version(path="/proc/driver/nvidia/version"):
    try:
        return parse_nvidia_driver_version(Path(path).read_text())
    except OSError:
        return ""


def format_cuda_version(number):
    """cuDriverGetVersion's integer (12040) -> '12.4'."""
    return f"{number // 1000}.{(number % 1000) // 10}"


def cuda_driver_api_version():
    """Highest CUDA version the installed driver supports (libcuda's cuDriverGetVersion), '' when unknown."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
        version = ctypes.c_int(0)
        if libcuda.cuDriverGetVersion(ctypes.byref(version)) == 0 and version.value > 0:
            return format_cuda_version(version.value)
    except (OSError, AttributeError):
        pass
    return ""


def gpu_identity(properties, pci):
    """A string naming one physical GPU (or MIG instance) on its host: its UUID, else its PCI id."""
    uuid = getattr(properties, "uuid", None)
    return str(uuid) if uuid else (pci or properties.name)


def _local_gpu_view(world):
    """This rank's GpuView, read from torch.cuda (device count respects CUDA_VISIBLE_DEVICES)."""
    visibility = describe_visibility()
    if not torch.cuda.is_available():
        build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        reason = f"torch {torch.__version__}, {build}: torch.cuda.is_available() is False; {visibility}"
        return GpuView(world.rank, world.host, world.local_rank, world.local_size, (), visibility, reason)
    visible = []
    for index in range(torch.cuda.device_count()):
        properties = torch.cuda.get_device_properties(index)
        visible.append(gpu_identity(properties, pci_id(properties)))
    return GpuView(world.rank, world.host, world.local_rank, world.local_size, tuple(visible), visibility)


def _decide_on_every_rank(world, local_message):
    """Share each rank's error (or None); raise the first one on every rank, so no rank is left waiting."""
    messages = world.allgather(local_message)
    first = next((message for message in messages if message), None)
    if first:
        raise UsageError(first)


# ---------------------------------------------------------------- the torch.cuda calls a step makes (a seam)

class CudaRuntime:
    """The torch.cuda calls CudaStep makes, in one place, so tests can run the step's logic on a CPU double."""

    def __init__(self):
        self.graph_events = graph_events_supported()

    def stream(self, device):
        return torch.cuda.Stream(device)

    def use_stream(self, stream):
        return torch.cuda.stream(stream)

    def use_device(self, device):
        return torch.cuda.device(device)

    def event(self, timing=False, inside_graph=False):
        """An event; a timing event recorded inside a CUDA graph must be 'external' to become a record node."""
        if inside_graph:
            return torch.cuda.Event(enable_timing=True, external=True)
        return torch.cuda.Event(enable_timing=timing)

    def capture(self, forward, pool, stream):
        """Capture forward() into a CUDA graph on `stream`; return (graph, its static output)."""
        graph = torch.cuda.CUDAGraph()
        # thread_local: other threads of the rank (the --timeout guard, MPI progress) may use CUDA meanwhile
        with torch.cuda.graph(graph, pool=pool, stream=stream, capture_error_mode="thread_local"):
            output = forward()
        return graph, output

    def pinned_empty(self, shape, dtype):
        return torch.empty(shape, dtype=dtype, pin_memory=True)

    def pin(self, tensor):
        return tensor.pin_memory()

    def is_device_tensor(self, tensor):
        return tensor.is_cuda

    def is_pinned(self, tensor):
        return tensor.is_pinned()


def graph_events_supported():
    """Whether events recorded inside a captured graph can time micro-batches (torch with external events, not ROCm)."""
    if getattr(torch.version, "hip", None):
        return False
    try:
        torch.cuda.Event(enable_timing=True, external=True)
    except TypeError:
        return False
    return True


# ---------------------------------------------------------------- the step

class CudaStep:
    """One batch size's step on this rank's GPU; call it with one step's input (host or device tensor).

    Returns (outputs in pinned host memory, valid until the next call; seconds of each micro-batch).
    With `overlap` the outputs of a host input are those of the previous call's input (output_lag_steps = 1);
    a device tensor is always computed at once (how --check-outputs hands its input over).
    """

    def __init__(self, forward_module, batch_size, example_input, device, memory_format=torch.contiguous_format,
                 overlap=True, use_graphs=False, graph_pool=None, runtime=None):
        self.runtime = runtime or CudaRuntime()
        self.forward_module = forward_module
        self.memory_format = memory_format
        self.device = device
        self.batch_size = batch_size
        self.micro_batches = max(1, example_input.shape[0] // batch_size)
        self.host_input = not self.runtime.is_device_tensor(example_input)
        self.overlap = overlap and self.host_input
        self.output_lag_steps = 1 if self.overlap else 0
        self.use_graphs = use_graphs
        self.graph_pool = graph_pool
        buffers = 2 if self.overlap else 1
        shape, dtype = tuple(example_input.shape), example_input.dtype
        self.compute_stream = self.runtime.stream(device)
        self.copy_stream = self.runtime.stream(device) if self.overlap else self.compute_stream
        self.device_inputs = ([torch.empty(shape, dtype=dtype, device=device) for _ in range(buffers)]
                              if self.host_input else [example_input])  # device data is computed where it is
        self.pinned_inputs = ([self.runtime.pinned_empty(shape, dtype) for _ in range(buffers)]
                              if self.host_input else [])
        self.copied = [self.runtime.event() for _ in range(buffers)]
        self.timed_inside_graph = use_graphs and self.runtime.graph_events
        self.latency_source = ("cuda events around the graph replay, split evenly over its micro-batches"
                               if use_graphs and not self.timed_inside_graph else "cuda events around each micro-batch")
        self.events = [self._event_pairs(self.timed_inside_graph) for _ in range(buffers)]
        self.replay_events = (self.runtime.event(timing=True), self.runtime.event(timing=True))
        self.graphs = [None] * buffers
        self.graph_outputs = [None] * buffers
        self.captures = 0
        self.host_output = None
        self.pending = None  # overlap: the buffer holding an input whose forward has not run yet
        self.calls = 0
        self.reuses_outputs = True  # host_output is overwritten by the next call

    def _event_pairs(self, inside_graph):
        return [(self.runtime.event(timing=True, inside_graph=inside_graph),
                 self.runtime.event(timing=True, inside_graph=inside_graph)) for _ in range(self.micro_batches)]

    # -- device work, issued on the current (compute) stream

    def _forward(self, device_input, events):
        """Every micro-batch of one step, each between its two events; one output tensor for the step."""
        outputs = []
        for micro_batch, (start, end) in zip(device_input.split(self.batch_size), events):
            start.record()
            outputs.append(self.forward_module(micro_batch.contiguous(memory_format=self.memory_format)))
            end.record()
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def _capture(self, index):
        """Warm up on a side stream (compile, cuDNN autotune), then capture the whole step for buffer `index`."""
        device_input = self.device_inputs[index]
        side = self.runtime.stream(self.device)
        side.wait_stream(self.compute_stream)
        scratch = self._event_pairs(False)
        with self.runtime.use_stream(side):
            for _ in range(GRAPH_WARMUP_CALLS):
                self._forward(device_input, scratch)
        self.compute_stream.wait_stream(side)
        self.compute_stream.synchronize()
        events = self.events[index] if self.timed_inside_graph else self._event_pairs(False)
        self.graphs[index], self.graph_outputs[index] = self.runtime.capture(
            lambda: self._forward(device_input, events), self.graph_pool, self.compute_stream)
        self.captures += 1

    def _compute(self, index):
        """Run the step on buffer `index`; return the device output."""
        if not self.use_graphs:
            return self._forward(self.device_inputs[index], self.events[index])
        if self.graphs[index] is None:
            self._capture(index)
        start, end = self.replay_events
        start.record()
        self.graphs[index].replay()
        end.record()
        return self.graph_outputs[index]

    def _stage(self, step_input, index):
        """Host input -> pinned buffer `index` (a no-op when it is pinned already)."""
        if self.runtime.is_pinned(step_input):
            return step_input
        pinned = self.pinned_inputs[index]
        pinned.copy_(step_input)
        return pinned

    def _adopt_device_input(self, step_input):
        """Device input (synthetic data): compute on it in place, or copy it into the captured buffer."""
        if not self.use_graphs or self.graphs[0] is None:
            self.device_inputs[0] = step_input  # eager: use it as it is; graphs: capture on this very tensor
        elif step_input.data_ptr() != self.device_inputs[0].data_ptr():
            # another device tensor (the output check after the timed steps): into the captured buffer
            self.device_inputs[0].copy_(step_input, non_blocking=True)
        return 0

    def _load(self, step_input):
        """Hand this step's input to the device; return (buffer whose forward runs now, buffer pending after it)."""
        if self.runtime.is_device_tensor(step_input):
            if not self.host_input:
                return self._adopt_device_input(step_input), None
            # a device tensor handed to a host-input step (the output check after the timed steps): computed
            # now, in buffer 0, so its outputs are its own; the pipeline starts again with the next host input
            self.device_inputs[0].copy_(step_input, non_blocking=True)
            return 0, None
        if not self.overlap:
            self.device_inputs[0].copy_(self._stage(step_input, 0), non_blocking=True)
            return 0, None
        if self.pending is None:
            # prime the pipeline: this input goes into both buffers (so both can be captured) and is computed
            # now; it stays pending, so the next step computes it again while copying its own input
            for buffer in range(len(self.device_inputs)):
                self.device_inputs[buffer].copy_(self._stage(step_input, buffer), non_blocking=True)
            if self.use_graphs and self.graphs[1] is None:
                self._capture(1)
            return 0, 0
        index = self.pending
        incoming = 1 - index
        staged = self._stage(step_input, incoming)
        with self.runtime.use_stream(self.copy_stream):
            self.device_inputs[incoming].copy_(staged, non_blocking=True)
            self.copied[incoming].record()
        self.compute_stream.wait_event(self.copied[index])
        return index, incoming

    def __call__(self, step_input):
        self.calls += 1
        with torch.inference_mode(), self.runtime.use_device(self.device), self.runtime.use_stream(self.compute_stream):
            index, self.pending = self._load(step_input)
            device_output = self._compute(index)
            if self.host_output is None:
                self.host_output = self.runtime.pinned_empty(tuple(device_output.shape), device_output.dtype)
            self.host_output.copy_(device_output, non_blocking=True)
            self.compute_stream.synchronize()
            if self.copy_stream is not self.compute_stream:
                self.copy_stream.synchronize()
        return self.host_output, self._latencies(index)

    def _latencies(self, index):
        if self.use_graphs and not self.timed_inside_graph:
            start, end = self.replay_events
            each = start.elapsed_time(end) * 1e-3 / self.micro_batches
            return [each] * self.micro_batches
        return [start.elapsed_time(end) * 1e-3 for start, end in self.events[index]]


# ---------------------------------------------------------------- the backend

class CudaBackend(Backend):
    name = "cuda"
    used_options = frozenset({"half_partial", "min_latency", "cuda_graphs", "allow_gpu_sharing", "compile",
                              "channels_last", "model_cache_path"})

    def __init__(self, config, world):
        super().__init__(config, world)
        view = _local_gpu_view(world)
        views = world.allgather(view)
        indices = plan_gpus(views, config.allow_gpu_sharing)  # same views -> same verdict on every rank
        for (host, gpu), ranks in shared_gpus(views, indices).items():
            if world.is_root:
                log.warning("--allow-gpu-sharing: ranks %s share GPU %s on %s; their timings compete",
                            ", ".join(map(str, ranks)), gpu, host)
        self.index = indices[world.rank]
        self.device = torch.device(DEVICE_TYPE, self.index)
        torch.cuda.set_device(self.device)
        self.properties = torch.cuda.get_device_properties(self.index)
        self.pci = pci_id(self.properties)
        self.numa_node = numa_node_of_pci_device(self.pci)
        message = None
        if config.half_dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
            message = f"--half-dtype bfloat16: {self.properties.name} has no bfloat16 support; use float16"
        _decide_on_every_rank(world, message)
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.model = None
        self.forward_module = None
        self.memory_after_load = 0
        self.runtime = CudaRuntime()
        self._last_step = None
        self._configure_numerics()

    def _configure_numerics(self):
        """cuDNN autotune (runs inside the first call), reduced-precision reductions only with --half-partial,
        and true float32 (no TF32) for 32-bit activations."""
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = self.config.half_partial
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = self.config.half_partial
        full_float32 = self.config.activations_bits == 32
        torch.backends.cuda.matmul.allow_tf32 = not full_float32
        torch.backends.cudnn.allow_tf32 = not full_float32

    def half_dtype(self):
        if self.config.half_dtype:
            return getattr(torch, self.config.half_dtype)
        return torch.float16

    def preferred_numa_node(self):
        return self.numa_node

    def prepare(self, model, image_size):
        self.model = model.to(self.device).to(memory_format=self.memory_format)
        self.forward_module = self.model
        if self.config.compile == "inductor":
            self.forward_module = compile_module(self.model, self.config.batch_sizes, self.config.model_cache_path)
        torch.cuda.synchronize(self.device)
        self.memory_after_load = torch.cuda.memory_allocated(self.device)

    def to_device(self, host_input):
        device_input = host_input.to(self.device)
        if device_input.dim() == 4:
            device_input = device_input.contiguous(memory_format=self.memory_format)
        torch.cuda.synchronize(self.device)
        return device_input

    def pin(self, host_input):
        """Pinned copy of a host tensor: data.py makes generated inputs with it, outside the timed step, so a
        step copies them to the GPU without blocking (the step stages any other host input itself)."""
        return self.runtime.pin(host_input)

    def io_overlap(self):
        """Whether steps copy the next input during the current forward: host data without --min-latency."""
        return self.config.data in ("generated", "real") and not self.config.min_latency

    def make_step(self, batch_size, example_input):
        """A fresh step (own buffers, own graph memory pool); the previous size's is released first."""
        self._last_step = None
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        pool = torch.cuda.graph_pool_handle() if self.config.cuda_graphs else None
        step = CudaStep(self.forward_module, batch_size, example_input, self.device, self.memory_format,
                        overlap=self.io_overlap(), use_graphs=self.config.cuda_graphs, graph_pool=pool,
                        runtime=self.runtime)
        self._last_step = step
        return step

    def peak_memory_allocated(self):
        """Most GPU memory this rank has had allocated since the current batch size's step was made (bytes)."""
        return int(torch.cuda.max_memory_allocated(self.device))

    def metadata(self):
        p = self.properties
        return {
            "device_name": p.name,
            "gpu_total_memory_bytes": int(p.total_memory),
            "gpu_compute_capability": f"{p.major}.{p.minor}",
            "gpu_multiprocessors": int(p.multi_processor_count),
            "gpu_visible_count": torch.cuda.device_count(),
            "nvidia_driver_version": nvidia_driver_version(),
            "cuda_driver_version": cuda_driver_api_version(),
            "cuda_runtime_version": torch.version.cuda or "",
            "hip_version": getattr(torch.version, "hip", None) or "",
            "cudnn_version": str(torch.backends.cudnn.version() or ""),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "cuda_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
            "cuda_fp16_reduced_precision_reduction": bool(
                torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction),
            "memory_format": "channels_last" if self.memory_format == torch.channels_last else "contiguous",
            "cuda_graphs": bool(self.config.cuda_graphs),
            "compile": self.config.compile,
            "io_overlap": self.io_overlap(),
        }

    def rank_info(self):
        p = self.properties
        return {
            "device": f"cuda:{self.index}",
            "gpu_name": p.name,
            "gpu_uuid": str(getattr(p, "uuid", "") or ""),
            "gpu_pci_id": self.pci,
            "gpu_numa_node": -1 if self.numa_node is None else int(self.numa_node),
            "gpu_total_memory_bytes": int(p.total_memory),
            "gpu_memory_after_load_bytes": int(self.memory_after_load),
            "visible_devices": describe_visibility(),
        }

    def run_info(self, batch_size):
        step = self._last_step
        info = {
            "gpu_peak_memory_allocated_bytes_rank0": self.peak_memory_allocated(),
            "gpu_peak_memory_reserved_bytes_rank0": int(torch.cuda.max_memory_reserved(self.device)),
            "cuda_graphs": bool(self.config.cuda_graphs),
        }
        if step is not None:
            info["io_overlap"] = bool(step.overlap)
            info["output_lag_steps"] = step.output_lag_steps
            info["batch_latency_source"] = step.latency_source
        return info

    def rank_run_values(self, batch_size):
        """Per-rank numbers of one run (gathered into [world_size] datasets): the peak GPU memory."""
        return {"gpu_peak_memory_allocated_bytes": self.peak_memory_allocated()}
