"""CUDA backend: wires cuda_devices.py (which GPU each rank uses) and cuda_step.py (one batch size's step on it)
into a job; each option: docs/backends.md."""
import logging

import torch

from mpirunner.backends.base import Backend, RunReport
from mpirunner.backends.compiling import compile_module
from mpirunner.backends.cuda_devices import (cuda_driver_api_version, describe_visibility, local_gpu_view,
                                             numa_node_of_pci_device, nvidia_driver_version, pci_id, plan_gpus,
                                             shared_gpus)
from mpirunner.backends.cuda_step import CudaRuntime, CudaStep
from mpirunner.errors import UsageError

log = logging.getLogger("mpirunner")

DEVICE_TYPE = "cuda"  # tests run the backend's wiring on a CPU double of torch.cuda with "cpu" here


class CudaBackend(Backend):
    name = "cuda"

    def __init__(self, config, world):
        super().__init__(config, world)
        views = world.allgather(local_gpu_view(world))
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
        world.agree(self._check_half_dtype)
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.forward_module = None
        self.memory_after_load = 0
        self.runtime = CudaRuntime()
        self._last_step = None
        # cuDNN autotune (inside the first call), reduced-precision reductions only with --half-partial, no TF32
        # for 32-bit activations
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = config.half_partial
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = config.half_partial
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = config.activations_bits != 32

    def _check_half_dtype(self):
        if self.config.half_dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
            raise UsageError(f"--half-dtype bfloat16: {self.properties.name} has no bfloat16 support; use float16")

    def preferred_numa_node(self):
        return self.numa_node

    def prepare(self, model, image_size):
        self.forward_module = model.to(self.device).to(memory_format=self.memory_format)
        if self.config.compile == "inductor":
            self.forward_module = compile_module(self.forward_module, self.config.batch_sizes,
                                                 self.config.model_cache_path)
        torch.cuda.synchronize(self.device)
        self.memory_after_load = torch.cuda.memory_allocated(self.device)

    def to_device(self, host_input):
        device_input = host_input.to(self.device)
        if device_input.dim() == 4:
            device_input = device_input.contiguous(memory_format=self.memory_format)
        torch.cuda.synchronize(self.device)
        return device_input

    def pin(self, host_input):
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
        self._last_step = CudaStep(self.forward_module, batch_size, example_input, self.device, self.memory_format,
                                   overlap=self.io_overlap(), use_graphs=self.config.cuda_graphs, graph_pool=pool,
                                   runtime=self.runtime)
        return self._last_step

    def peak_memory_allocated(self):
        """Most GPU memory this rank has had allocated since the current batch size's step was made (bytes)."""
        return int(torch.cuda.max_memory_allocated(self.device))

    def roof_device(self):
        return self.device

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

    def run_report(self, batch_size):
        """The last step's memory peaks and how it ran (rank 0's in the run group), each rank's peak (a dataset)."""
        step = self._last_step
        attrs = {
            "gpu_peak_memory_allocated_bytes_rank0": self.peak_memory_allocated(),
            "gpu_peak_memory_reserved_bytes_rank0": int(torch.cuda.max_memory_reserved(self.device)),
            "cuda_graphs": bool(self.config.cuda_graphs),
        }
        if step is not None:
            attrs.update(io_overlap=bool(step.overlap), output_lag_steps=step.output_lag_steps,
                         batch_latency_source=step.latency_source)
        return RunReport(attrs=attrs, per_rank={"gpu_peak_memory_allocated_bytes": self.peak_memory_allocated()})
