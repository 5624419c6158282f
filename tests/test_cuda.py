"""The CUDA backend: what can be checked without a GPU here, and (marked `cuda`) what needs one.

Without a GPU: the rank -> GPU plan and its errors (a seam over what each rank sees), selection
order, CPU-side validation of the CUDA flags, `--device cuda` failing cleanly (also under mpiexec),
the sysfs/driver readers, and the step's pipeline (IO overlap, CUDA graphs, micro-batch timing) run
on a CPU double of torch.cuda. With a GPU (`python -m pytest -m cuda tests`): the real thing.
"""
import contextlib
import itertools
import time
from types import SimpleNamespace

import h5py
import pytest
import torch

from mpirunner.backends import select_backend_name
from mpirunner.backends.base import Backend
from mpirunner.backends.compiling import compile_module
from mpirunner.backends.cuda import CudaBackend
from mpirunner.backends.cuda_devices import (GpuView, describe_visibility, format_cuda_version, gpu_index_for_rank,
                                             numa_node_of_pci_device, parse_nvidia_driver_version, pci_id, plan_gpus,
                                             shared_gpus)
from mpirunner.backends.cuda_step import GRAPH_WARMUP_CALLS, CudaStep
from mpirunner.config import resolve_config
from mpirunner.errors import UsageError
from tests.conftest import run_cli

HAS_GPU = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")  # always together with @pytest.mark.cuda
no_gpu_here = pytest.mark.skipif(HAS_GPU, reason="checks the error a machine without a GPU gives")


# ---------------------------------------------------------------- which GPU each rank gets

def views(host, local_size, visible, first_rank=0, visibility="CUDA_VISIBLE_DEVICES unset"):
    """The views of the `local_size` ranks of one host that all see the GPUs `visible` (a callable per rank)."""
    return [GpuView(first_rank + i, host, i, local_size, tuple(visible(i)), visibility) for i in range(local_size)]


def test_local_rank_modulo_visible_gpus():
    assert [gpu_index_for_rank(rank, 4) for rank in range(6)] == [0, 1, 2, 3, 0, 1]
    with pytest.raises(UsageError, match="no CUDA GPU"):
        gpu_index_for_rank(0, 0)


def test_one_rank_per_gpu_on_each_host():
    four = lambda _rank: ["gpu-a", "gpu-b", "gpu-c", "gpu-d"]  # noqa: E731
    assert plan_gpus(views("n1", 4, four), allow_sharing=False) == [0, 1, 2, 3]
    two_hosts = views("n1", 2, lambda _: ["a0", "a1"]) + views("n2", 2, lambda _: ["b0", "b1"], first_rank=2)
    assert plan_gpus(two_hosts, allow_sharing=False) == [0, 1, 0, 1]


def test_more_local_ranks_than_gpus_is_an_error_unless_sharing_is_allowed():
    crowded = views("n1", 4, lambda _: ["a0", "a1"], visibility="CUDA_VISIBLE_DEVICES='0,1'")
    with pytest.raises(UsageError) as error:
        plan_gpus(crowded, allow_sharing=False)
    message = str(error.value)
    for part in ("4 ranks on host n1", "2 visible GPU(s)", "CUDA_VISIBLE_DEVICES='0,1'", "local ranks 0 and 2",
                 "--allow-gpu-sharing"):
        assert part in message
    assert "\n" not in message
    assert plan_gpus(crowded, allow_sharing=True) == [0, 1, 0, 1]
    assert shared_gpus(crowded, [0, 1, 0, 1]) == {("n1", "a0"): [0, 2], ("n1", "a1"): [1, 3]}


def test_a_launcher_that_gives_each_rank_its_own_gpu_is_respected():
    # srun --gpus-per-task=1 style: every rank sees one GPU, a different one
    own = views("n1", 4, lambda rank: [f"gpu-{rank}"])
    assert plan_gpus(own, allow_sharing=False) == [0, 0, 0, 0]
    assert shared_gpus(own, [0, 0, 0, 0]) == {}
    # ... but two ranks handed the same one would share it
    same = views("n1", 2, lambda _rank: ["gpu-0"])
    with pytest.raises(UsageError, match="would share"):
        plan_gpus(same, allow_sharing=False)


def test_a_rank_without_a_gpu_is_named():
    seen = views("n1", 1, lambda _: ["a0"]) + [GpuView(1, "n2", 0, 1, (), "CUDA_VISIBLE_DEVICES=''", "torch says no")]
    with pytest.raises(UsageError, match=r"no CUDA GPU is visible to rank 1 on host n2 \(torch says no\)"):
        plan_gpus(seen, allow_sharing=True)


def test_visibility_is_described_as_set():
    assert describe_visibility({"CUDA_VISIBLE_DEVICES": "2,3"}) == "CUDA_VISIBLE_DEVICES='2,3'"
    assert describe_visibility({}) == "CUDA_VISIBLE_DEVICES unset"


# ---------------------------------------------------------------- facts read from sysfs, /proc, the driver

def test_numa_node_of_the_gpu_from_sysfs(tmp_path):
    for pci, text in (("0000:3b:00.0", "1\n"), ("0000:5e:00.0", "-1\n"), ("0000:af:00.0", "x\n")):
        folder = tmp_path / "bus" / "pci" / "devices" / pci
        folder.mkdir(parents=True)
        (folder / "numa_node").write_text(text)
    assert numa_node_of_pci_device("0000:3b:00.0", tmp_path) == 1
    assert numa_node_of_pci_device("0000:5e:00.0", tmp_path) is None  # -1: the platform does not say
    assert numa_node_of_pci_device("0000:af:00.0", tmp_path) is None
    assert numa_node_of_pci_device("0000:d8:00.0", tmp_path) is None  # no such device
    assert numa_node_of_pci_device("", tmp_path) is None


def test_pci_id_in_sysfs_spelling():
    assert pci_id(SimpleNamespace(pci_domain_id=0, pci_bus_id=0x3B, pci_device_id=0)) == "0000:3b:00.0"
    assert pci_id(SimpleNamespace(pci_domain_id=1, pci_bus_id=0xAF, pci_device_id=0x1F)) == "0001:af:1f.0"
    assert pci_id(SimpleNamespace(name="old torch")) == ""


def test_driver_versions():
    proprietary = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\nGCC ..."
    open_module = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.15  Release Build  (dvs-builder)"
    assert parse_nvidia_driver_version(proprietary) == "535.104.05"
    assert parse_nvidia_driver_version(open_module) == "550.54.15"
    assert parse_nvidia_driver_version("") == ""
    assert format_cuda_version(12040) == "12.4"
    assert format_cuda_version(13000) == "13.0"


# ---------------------------------------------------------------- selection and CPU-side validation

def test_auto_picks_ipu_then_cuda_then_cpu():
    yes, no = (lambda: True), (lambda: False)
    assert select_backend_name("auto", ipu_available=yes, cuda_available=yes) == "ipu"
    assert select_backend_name("auto", ipu_available=no, cuda_available=yes) == "cuda"
    assert select_backend_name("auto", ipu_available=no, cuda_available=no) == "cpu"
    assert select_backend_name("cuda", ipu_available=yes, cuda_available=no) == "cuda"  # asked for: no probing
    assert select_backend_name("cpu", ipu_available=yes, cuda_available=yes) == "cpu"


def test_cuda_uses_its_flags_and_names_the_ipu_ones():
    config = resolve_config({"device": "cuda", "cuda_graphs": True, "allow_gpu_sharing": True, "min_latency": True,
                             "half_partial": True, "compile": "inductor", "num_io_tiles": 32, "replicas": 2})
    backend = CudaBackend.__new__(CudaBackend)  # the interface only: no GPU needed
    Backend.__init__(backend, config, world=None)
    assert backend.unused_options() == ["replicas", "num_io_tiles"]


def test_cuda_graphs_on_cpu_is_an_error():
    for device in ("cpu", "ipu"):
        with pytest.raises(UsageError, match=f"--cuda-graphs needs --device cuda or auto .*--device {device}"):
            resolve_config({"device": device, "cuda_graphs": True})
    result = run_cli(["--device", "cpu", "--cuda-graphs"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "mpirunner: error: --cuda-graphs needs --device cuda or auto (this run uses --device cpu)"]


@no_gpu_here
def test_cuda_flags_on_a_cpu_run_are_named(tmp_path, tiny_args):
    output = tmp_path / "cpu.h5"
    result = run_cli([*tiny_args, "--iterations", "2", "--cuda-graphs", "--allow-gpu-sharing", "--min-latency",
                      "--output", output])  # --device auto: the CPU here
    assert result.returncode == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if "does not use" in line]
    assert len(warning) == 1
    for flag in ("--cuda-graphs", "--allow-gpu-sharing", "--min-latency"):
        assert flag in warning[0]
    with h5py.File(output) as h5:
        assert h5.attrs["backend"] == "cpu"


@no_gpu_here
@pytest.mark.parametrize("ranks", [None, 2])
def test_device_cuda_without_a_gpu_is_one_line_and_exit_2(tmp_path, tiny_args, ranks):
    output = tmp_path / "none.h5"
    result = run_cli([*tiny_args, "--device", "cuda", "--output", output], ranks=ranks)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # rank 0 alone says it, once
    assert lines[0].startswith("mpirunner: error: --device cuda: no CUDA GPU is visible to rank 0")
    assert "use --device cpu" in lines[0]
    assert not output.exists()


@pytest.mark.parametrize("name, model, batch", [("resnet50-gpu", "resnet50", 256),
                                                 ("efficientnet-b0-gpu", "efficientnet-b0", 256),
                                                 ("efficientnet-b4-gpu", "efficientnet-b4", 64),
                                                 ("resnext101-gpu", "resnext101", 128)])
def test_gpu_configs(name, model, batch):
    config = resolve_config({"config": name})
    assert (config.model, config.device, config.batch_sizes) == (model, "cuda", (batch,))
    assert config.precision == "16.16" and config.channels_last and config.cuda_graphs and config.eight_bit_io


def test_compile_helper_covers_a_sweep():
    import torch._dynamo
    import torch._inductor.config as inductor_config

    saved = torch._dynamo.config.recompile_limit, inductor_config.freezing
    try:
        compiled = compile_module(torch.nn.Linear(2, 2), batch_sizes=tuple(range(1, 81)))
        assert torch._dynamo.config.recompile_limit >= 2 * 80 + 8  # 80 sizes never fall back to eager
        assert inductor_config.freezing  # weights folded as constants: inference only
        assert isinstance(compiled, torch._dynamo.eval_frame.OptimizedModule)
    finally:
        torch._dynamo.config.recompile_limit, inductor_config.freezing = saved


# ---------------------------------------------------------------- the step on a CPU double of torch.cuda

class FakeEvent:
    def __init__(self, log, inside_graph):
        self.log, self.inside_graph, self.at = log, inside_graph, None

    def record(self, stream=None):
        self.at = time.perf_counter()

    def elapsed_time(self, end):
        return (end.at - self.at) * 1e3


class FakeStream:
    def __init__(self, log, name):
        self.log, self.name = log, name

    def wait_stream(self, other):
        self.log.append(("wait_stream", self.name, other.name))

    def wait_event(self, event):
        self.log.append(("wait_event", self.name))

    def synchronize(self):
        self.log.append(("synchronize", self.name))


class FakeGraph:
    """Replay re-runs what was captured and writes into the captured output, as a CUDA graph does."""

    def __init__(self, forward, output):
        self.forward, self.output, self.replays = forward, output, 0

    def replay(self):
        self.replays += 1
        self.output.copy_(self.forward())


class FakeRuntime:
    """CudaRuntime on the CPU: streams and events that only log, graphs that re-run their function."""

    def __init__(self, graph_events=True):
        self.graph_events = graph_events
        self.log = []
        self.names = itertools.count()
        self.current = []
        self.device_tensors = set()
        self.pinned = set()
        self.graphs = []

    def stream(self, device):
        return FakeStream(self.log, f"stream{next(self.names)}")

    @contextlib.contextmanager
    def use_stream(self, stream):
        self.current.append(stream.name)
        try:
            yield
        finally:
            self.current.pop()

    def use_device(self, device):
        return contextlib.nullcontext()

    def event(self, timing=False, inside_graph=False):
        return FakeEvent(self.log, inside_graph)

    def capture(self, forward, pool, stream):
        self.log.append(("capture", stream.name))
        graph = FakeGraph(forward, forward())
        self.graphs.append(graph)
        return graph, graph.output

    def pinned_empty(self, shape, dtype):
        return torch.empty(shape, dtype=dtype)

    def pin(self, tensor):
        pinned = tensor.clone()
        self.pinned.add(pinned.data_ptr())
        return pinned

    def is_device_tensor(self, tensor):
        return tensor.data_ptr() in self.device_tensors

    def is_pinned(self, tensor):
        return tensor.data_ptr() in self.pinned


class SampleSums(torch.nn.Module):
    """One number per sample (its sum), so every output row says which input it came from; counts calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, images):
        self.calls += 1
        return images.float().flatten(1).sum(1, keepdim=True)


def make_step(runtime, batch_size=2, micro_batches=1, **options):
    model = SampleSums()
    example = torch.zeros(batch_size * micro_batches, 3, 4, 4)
    step = CudaStep(model, batch_size, example, torch.device("cpu"), runtime=runtime, **options)
    return step, model


def inputs(count, samples=2):
    return [torch.full((samples, 3, 4, 4), float(k + 1)) + torch.arange(samples).view(-1, 1, 1, 1) for k in range(count)]


def sums(tensor):
    return tensor.float().flatten(1).sum(1, keepdim=True)


def test_io_overlap_copies_the_next_input_while_the_previous_one_runs():
    runtime = FakeRuntime()
    step, _ = make_step(runtime, overlap=True)
    assert step.overlap and step.output_lag_steps == 1
    steps = inputs(4)
    outputs = [step(x)[0].clone() for x in steps]
    # the first call computes its own input; from then on each step returns the previous step's outputs
    for got, expected in zip(outputs, [steps[0], steps[0], steps[1], steps[2]]):
        assert torch.equal(got, sums(expected))
    assert step.copy_stream is not step.compute_stream
    assert ("synchronize", step.copy_stream.name) in runtime.log  # both streams are done before a step returns
    assert runtime.log[-1] == ("synchronize", step.copy_stream.name)


@pytest.mark.parametrize("use_graphs", [False, True])
def test_the_output_check_after_timing_gets_its_own_outputs(use_graphs):
    # --check-outputs hands the timed step a device tensor (backend.to_device) after the timed steps
    runtime = FakeRuntime()
    step, _ = make_step(runtime, overlap=True, use_graphs=use_graphs)
    for x in inputs(3):
        step(x)
    check = torch.full((2, 3, 4, 4), 7.0)
    runtime.device_tensors.add(check.data_ptr())
    assert torch.equal(step(check)[0], sums(check))
    again = inputs(1)[0] * 5
    assert torch.equal(step(again)[0], sums(again))  # the pipeline starts again from this host input
    assert step.captures == (2 if use_graphs else 0)


class SlowSampleSums(SampleSums):
    """SampleSums that takes at least FORWARD_SECONDS per call, so a micro-batch's latency has a floor."""

    FORWARD_SECONDS = 0.005

    def forward(self, images):
        time.sleep(self.FORWARD_SECONDS)
        return super().forward(images)


def test_min_latency_turns_the_overlap_off():
    step = CudaStep(SlowSampleSums(), 2, torch.zeros(2, 3, 4, 4), torch.device("cpu"), overlap=False,
                    runtime=FakeRuntime())
    assert not step.overlap and step.output_lag_steps == 0 and step.copy_stream is step.compute_stream
    for x in inputs(3):
        output, latencies = step(x)
        assert torch.equal(output, sums(x))  # no lag: each step's own outputs
        # the events bracket the forward: each latency covers its sleep, and not the whole test's time
        assert len(latencies) == 1 and SlowSampleSums.FORWARD_SECONDS <= latencies[0] < 1.0


def test_micro_batches_are_timed_each_and_stay_in_order():
    step, model = make_step(FakeRuntime(), batch_size=2, micro_batches=3, overlap=False)
    x = torch.arange(6 * 48, dtype=torch.float32).view(6, 3, 4, 4)
    output, latencies = step(x)
    assert torch.equal(output, sums(x))
    assert len(latencies) == 3 and model.calls == 3


@pytest.mark.parametrize("overlap", [False, True])
def test_cuda_graphs_capture_the_whole_step_once_and_replay_it(overlap):
    runtime = FakeRuntime()
    step, model = make_step(runtime, micro_batches=2, overlap=overlap, use_graphs=True)
    steps = [torch.cat([x, x + 100]) for x in inputs(5)]
    outputs = [(output.clone(), latencies) for output, latencies in map(step, steps)]  # host output is reused
    buffers = 2 if overlap else 1
    assert step.captures == buffers  # every capture happens in the first call, none while timing
    assert [entry[0] for entry in runtime.log].count("capture") == buffers
    assert sum(graph.replays for graph in runtime.graphs) == len(steps)
    calls_to_make = buffers * (GRAPH_WARMUP_CALLS + 1) * 2  # warm-up and capture, 2 micro-batches each
    assert model.calls == calls_to_make + len(steps) * 2
    expected = [steps[0], steps[0], steps[1], steps[2], steps[3]] if overlap else steps
    for (output, latencies), x in zip(outputs, expected):
        assert torch.equal(output, sums(x))
        assert len(latencies) == 2


def test_graph_timing_falls_back_to_splitting_the_replay_when_events_cannot_be_captured():
    step, _ = make_step(FakeRuntime(graph_events=False), micro_batches=4, overlap=False, use_graphs=True)
    step(inputs(1, samples=8)[0])
    _, latencies = step(inputs(1, samples=8)[0])
    assert len(latencies) == 4 and len(set(latencies)) == 1
    assert "split evenly" in step.latency_source


@pytest.mark.parametrize("use_graphs", [False, True])
def test_device_input_is_used_in_place(use_graphs):
    runtime = FakeRuntime()
    model = SampleSums()
    device_input = inputs(1)[0]
    runtime.device_tensors.add(device_input.data_ptr())
    step = CudaStep(model, 2, device_input, torch.device("cpu"), overlap=True, use_graphs=use_graphs, runtime=runtime)
    assert not step.host_input and not step.overlap and step.pinned_inputs == []
    for _ in range(3):
        output, _ = step(device_input)
        assert torch.equal(output, sums(device_input))
    assert step.device_inputs[0] is device_input


@pytest.fixture
def cpu_double_of_cuda(monkeypatch):
    """torch.cuda answered by a pretend node with two GPUs; tensors stay on the CPU. Restores everything."""
    import mpirunner.backends.cuda as cuda_module

    properties = [SimpleNamespace(name="Pretend GPU", total_memory=80 * 2**30, major=9, minor=0,
                                  multi_processor_count=132, uuid=f"GPU-{index}", pci_domain_id=0,
                                  pci_bus_id=0x3B + index, pci_device_id=0) for index in range(2)]
    fakes = {"is_available": lambda: True, "device_count": lambda: 2, "get_device_properties": properties.__getitem__,
             "set_device": lambda device: None, "synchronize": lambda device=None: None,
             "is_bf16_supported": lambda: True, "memory_allocated": lambda device=None: 123,
             "reset_peak_memory_stats": lambda device=None: None, "max_memory_allocated": lambda device=None: 456,
             "max_memory_reserved": lambda device=None: 789, "graph_pool_handle": lambda: ("pool",)}
    for name, fake in fakes.items():
        monkeypatch.setattr(torch.cuda, name, fake)
    monkeypatch.setattr(cuda_module, "DEVICE_TYPE", "cpu")
    monkeypatch.setattr(cuda_module, "CudaRuntime", FakeRuntime)
    monkeypatch.setattr(cuda_module, "numa_node_of_pci_device", {"0000:3c:00.0": 1}.get)
    flags = [(torch.backends.cudnn, "benchmark"), (torch.backends.cudnn, "allow_tf32"),
             (torch.backends.cuda.matmul, "allow_tf32"),
             (torch.backends.cuda.matmul, "allow_fp16_reduced_precision_reduction"),
             (torch.backends.cuda.matmul, "allow_bf16_reduced_precision_reduction")]
    saved = [getattr(module, flag) for module, flag in flags]
    yield
    for (module, flag), value in zip(flags, saved):  # the backend sets these process-wide
        setattr(module, flag, value)


def pretend_world(rank, local_size):
    """Rank `rank` of `local_size` ranks on one node; the other ranks see what this one sees and say what it says."""

    def allgather(value):
        if isinstance(value, GpuView):
            return [GpuView(i, "node1", i, local_size, value.visible, value.visibility) for i in range(local_size)]
        return [value] * local_size

    return SimpleNamespace(rank=rank, host="node1", local_rank=rank, local_size=local_size, is_root=rank == 0,
                           allgather=allgather, agree=lambda check: check())


@pytest.mark.parametrize("options", [{}, {"cuda_graphs": True, "device_iterations": 2}],
                         ids=["eager", "graphs"])
def test_backend_wiring_on_a_cpu_double_of_cuda(cpu_double_of_cuda, options):
    """Every backend method a job calls, in a job's order, on rank 1 of 2 of a pretend two-GPU node."""
    from mpirunner.models.assembly import build_benchmark_model
    from mpirunner.bench import measure
    from mpirunner.data import make_input_source, step_shape
    from mpirunner.runfile.hdf5 import _ranks_table

    config = resolve_config({"model": "resnet18", "device": "cuda", "image_size": 32, "precision": "16.16",
                             "channels_last": True, "half_partial": True, "iterations": 3, **options})
    backend = CudaBackend(config, pretend_world(1, 2))
    assert backend.device == torch.device("cpu", 1)  # local rank 1 -> GPU 1
    assert backend.preferred_numa_node() == 1  # from GPU 1's PCI id, 0000:3c:00.0
    assert torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction
    assert torch.backends.cudnn.allow_tf32  # 16-bit activations: TF32 allowed (32.32 turns it off)
    assert backend.half_dtype() == torch.float16
    model = build_benchmark_model(config, backend.half_dtype())
    model.module.float()  # CPU kernels: the pretend GPU computes in float32
    backend.prepare(model.module, model.image_size)
    micro = config.device_iterations
    source = make_input_source(config, backend, step_shape(2, micro, 32), torch.float32, 1)
    step = backend.make_step(2, source.next_input())
    staged = []
    step._stage = lambda tensor, index, stage=step._stage: staged.append(stage(tensor, index) is tensor) or tensor
    timings = measure(step, source, config.iterations, 1, lambda: None)
    assert staged and all(staged)  # generated data comes pinned: steps copy it without staging it first
    assert timings.step_seconds.shape == (3,) and timings.batch_latency.shape == (3 * micro,)
    assert step.overlap and step.output_lag_steps == 1 and step.captures == (2 if config.cuda_graphs else 0)
    root = backend.metadata()
    assert (root["device_name"], root["gpu_compute_capability"], root["io_overlap"]) == ("Pretend GPU", "9.0", True)
    row = backend.rank_info()
    assert (row["device"], row["gpu_pci_id"], row["gpu_numa_node"], row["gpu_uuid"]) == \
        ("cuda:1", "0000:3c:00.0", 1, "GPU-1")
    _ranks_table([{"rank": 1, **row}])  # every column fits the /ranks table
    report = backend.run_report(2)
    assert report.attrs["gpu_peak_memory_allocated_bytes_rank0"] == 456 and report.attrs["output_lag_steps"] == 1
    assert report.per_rank == {"gpu_peak_memory_allocated_bytes": 456}


def test_bfloat16_on_a_gpu_without_it_is_a_usage_error(cpu_double_of_cuda, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    config = resolve_config({"model": "resnet18", "device": "cuda", "precision": "16.16", "half_dtype": "bfloat16"})
    with pytest.raises(UsageError, match="--half-dtype bfloat16: Pretend GPU has no bfloat16 support; use float16"):
        CudaBackend(config, pretend_world(0, 1))


def test_backend_refuses_crowded_gpus_on_every_rank(cpu_double_of_cuda):
    config = resolve_config({"model": "resnet18", "device": "cuda"})
    for rank in range(3):  # three local ranks, two GPUs: every rank raises the same one line
        with pytest.raises(UsageError, match="local ranks 0 and 2 would share GPU 0"):
            CudaBackend(config, pretend_world(rank, 3))
    allowed = resolve_config({"model": "resnet18", "device": "cuda", "allow_gpu_sharing": True})
    assert CudaBackend(allowed, pretend_world(2, 3)).index == 0


# ---------------------------------------------------------------- on a GPU (python -m pytest -m cuda tests)

def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def _gpu_step(config_values, image_size=32):
    from mpirunner.models.assembly import build_benchmark_model
    from mpirunner.mpi.world import init_world

    config = resolve_config({"model": "resnet18", "device": "cuda", "image_size": image_size, **config_values})
    world = init_world()
    backend = CudaBackend(config, world)
    model = build_benchmark_model(config, backend.half_dtype())
    backend.prepare(model.module, model.image_size)
    return config, backend, model


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("options", [{}, {"cuda_graphs": True}, {"min_latency": True},
                                     {"cuda_graphs": True, "min_latency": True, "device_iterations": 3}],
                         ids=["eager-overlap", "graphs-overlap", "eager", "graphs-3-micro-batches"])
def test_gpu_step_matches_float32(options):
    from mpirunner.models.assembly import build_reference_model

    config, backend, model = _gpu_step({"precision": "16.16", "channels_last": True, **options})
    micro = config.device_iterations
    steps = [torch.randn(4 * micro, 3, 32, 32, generator=torch.Generator().manual_seed(k)).half() for k in range(4)]
    step = backend.make_step(4, steps[0])
    reference_model = build_reference_model(config)  # float32, same weights, on the host
    outputs, latencies = [], []
    for x in steps:
        out, lat = step(x)
        outputs.append(out.float().clone())
        latencies.append(lat)
    lag = step.output_lag_steps
    expected = [steps[0]] + steps[:-1] if lag else steps
    with torch.inference_mode():
        for got, x in zip(outputs, expected):
            reference = reference_model(x.float())
            assert (got - reference).abs().max() <= 2e-2 * reference.abs().max()
    assert all(len(lat) == micro and all(0 < value < 10 for value in lat) for lat in latencies)
    assert backend.run_report(4).attrs["gpu_peak_memory_allocated_bytes_rank0"] > 0


@pytest.mark.cuda
@needs_gpu
def test_gpu_step_time_covers_the_device_work():
    import numpy as np

    from mpirunner.bench import measure

    _, backend, _ = _gpu_step({"precision": "16.16", "min_latency": True}, image_size=64)

    class Source:
        def next_input(self):
            return torch.randn(64, 3, 64, 64).half()

    step = backend.make_step(64, Source().next_input())
    timings = measure(step, Source(), 10, 2, lambda: None)
    # the step synchronises: each step's host time holds its micro-batch's device time
    assert np.all(timings.step_seconds >= timings.batch_latency * 0.99)


@pytest.mark.cuda
@needs_gpu
def test_gpu_compile_matches_eager():
    _, backend, _ = _gpu_step({"precision": "16.16", "compile": "inductor", "min_latency": True})
    _, eager_backend, _ = _gpu_step({"precision": "16.16", "min_latency": True})
    x = torch.randn(4, 3, 32, 32).half()
    compiled = backend.make_step(4, x)(x)[0].float().clone()
    eager = eager_backend.make_step(4, x)(x)[0].float().clone()
    assert (compiled - eager).abs().max() <= 2e-2 * eager.abs().max()


@pytest.mark.cuda
@needs_gpu
def test_gpu_run_records_the_gpu_per_rank(tmp_path, tiny_args):
    output = tmp_path / "gpu.h5"
    result = run_cli([*tiny_args, "--device", "cuda", "--batch-size", "2,4", "--iterations", "4", "--precision",
                      "16.16", "--cuda-graphs", "--allow-gpu-sharing", "--output", output], ranks=2)
    assert result.returncode == 0, result.stderr
    count = torch.cuda.device_count()
    with h5py.File(output) as h5:
        assert h5.attrs["backend"] == "cuda"
        assert h5.attrs["device_name"] == torch.cuda.get_device_name(0)
        assert h5.attrs["dtype"] == "float16"
        for key in ("cuda_runtime_version", "cudnn_version", "nvidia_driver_version", "gpu_total_memory_bytes"):
            assert key in h5.attrs, key
        ranks = h5["ranks"][()]
        devices = [text(value) for value in ranks["device"]]
        assert sorted(devices) == sorted(f"cuda:{rank % count}" for rank in range(2))
        for row in ranks:
            pci = text(row["gpu_pci_id"])
            assert pci.count(":") == 2 and pci.endswith(".0")
            sysfs_node = numa_node_of_pci_device(pci)
            assert row["gpu_numa_node"] == (-1 if sysfs_node is None else sysfs_node)
        for name in ("bs00002", "bs00004"):
            run = h5["runs"][name]
            assert run.attrs["gpu_peak_memory_allocated_bytes_rank0"] > 0
            peaks = run["gpu_peak_memory_allocated_bytes"][()]  # every rank's, gathered per run
            assert peaks.shape == (2,) and (peaks > 0).all()
            assert run["step_seconds"].shape == (2, 4)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_GPU or torch.cuda.device_count() > 1, reason="needs exactly one CUDA GPU")
def test_two_ranks_on_one_gpu_need_allow_gpu_sharing(tiny_args):
    result = run_cli([*tiny_args, "--device", "cuda", "--iterations", "2"], ranks=2)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("mpirunner: error:")]
    assert len(errors) == 1 and "--allow-gpu-sharing" in errors[0]  # rank 0 alone says it, once


# ---------------------------------------------------------------- the GPU check script

def test_gpu_check_script_passes_bash_n_and_shellcheck():
    import subprocess

    from tests.conftest import REPO, shellcheck_path

    script = REPO / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    result = subprocess.run([shellcheck_path(), str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_gpu_results_replace_only_their_own_section(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_modes.py"
    spec = importlib.util.spec_from_file_location("gpu_modes", path)
    gpu_modes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_modes)
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## CPU\nkept\n")
    row = {"batch": 32, "mode": "eager", "throughput": 1000.0, "step_p50_ms": 32.0, "latency_p50_ms": 31.0,
           "first_call_s": 2.0, "peak_gib": 1.5, "relative_error": 1e-3, "top1_agreement": 1.0, "check": "ok"}
    args = SimpleNamespace(model="resnet50", iterations=30, warmup=5, batch_sizes=[32])
    gpu_modes.write_section(results, gpu_modes.table([row], {"device_name": "GPU-A"}, args, {}))
    graphs = dict(row, mode="cuda-graphs", throughput=1500.0)
    gpu_modes.write_section(results, gpu_modes.table([row, graphs], {"device_name": "GPU-B"}, args, {}))
    text = results.read_text()
    assert text.startswith("# Benchmark results\n\n## CPU\nkept\n")
    assert text.count(gpu_modes.BEGIN) == 1 and "GPU-A" not in text and "**GPU-B**" in text
    assert "| 32 | cuda-graphs | 1500.0 | 1.50 |" in text
    assert gpu_modes.compare(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 2.5]])) == (pytest.approx(0.2), 1.0)
