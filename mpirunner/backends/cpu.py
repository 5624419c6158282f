"""CPU backend: PyTorch eval + inference_mode, one replica per rank, oneDNN kernels."""
import functools
import logging
import platform
import time

import torch

from mpirunner.backends.base import Backend


def _onednn_supports(kind):
    """True when this CPU runs `kind` natively, as oneDNN reports it (bf16: AVX512-BF16 / AMX, fp16: AVX512-FP16)."""
    try:
        supported = getattr(torch.ops.mkldnn, f"_is_mkldnn_{kind}_supported")
        return bool(torch.backends.mkldnn.is_available() and supported())
    except (AttributeError, RuntimeError):
        return False


cpu_has_bf16 = functools.partial(_onednn_supports, "bf16")
cpu_has_fp16 = functools.partial(_onednn_supports, "fp16")


def software_half_warning(precision, half_dtype, has_native):
    """The warning ('' if none) when a 16-bit --precision runs in software on this CPU: the number measures that."""
    if precision == "32.32" or has_native:
        return ""
    return (f"--precision {precision}: this CPU has no native 16-bit type (no AVX512-BF16, AMX or AVX512-FP16), so "
            f"{half_dtype} runs in software, typically several times slower than float32; for this CPU's speed use "
            f"--precision 32.32")


def cpu_name():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "cpu"


class CpuBackend(Backend):
    name = "cpu"

    def __init__(self, config, world):
        super().__init__(config, world)
        self.model = None
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format

    def half_dtype(self):
        if self.config.half_dtype:
            return getattr(torch, self.config.half_dtype)
        return torch.bfloat16 if cpu_has_bf16() else torch.float16

    def prepare(self, model, image_size):
        half = self.half_dtype()
        warning = software_half_warning(self.config.precision, str(half).replace("torch.", ""),
                                        cpu_has_bf16() if half == torch.bfloat16 else cpu_has_fp16())
        if warning and self.world.is_root:
            logging.getLogger("mpirunner").warning(warning)
        self.model = model.to(memory_format=self.memory_format)
        if self.config.compile == "inductor":
            from mpirunner.backends.compiling import compile_module

            self.model = compile_module(self.model, self.config.batch_sizes, self.config.model_cache_path)

    def to_device(self, host_input):
        if host_input.dim() == 4:
            return host_input.contiguous(memory_format=self.memory_format)
        return host_input

    def make_step(self, batch_size, example_input):
        model = self.model
        to_device = self.to_device

        def step(step_input):
            latencies = []
            outputs = []
            with torch.inference_mode():
                for micro_batch in step_input.split(batch_size):
                    start = time.perf_counter_ns()
                    outputs.append(model(to_device(micro_batch)))
                    latencies.append((time.perf_counter_ns() - start) * 1e-9)
            return torch.cat(outputs), latencies

        step.output_lag_steps = 0  # each call returns its own input's outputs
        step.reuses_outputs = False  # torch.cat makes a fresh tensor every call
        return step

    def metadata(self):
        return {"device_name": cpu_name(), "cpu_bf16": cpu_has_bf16(),
                "mkldnn": torch.backends.mkldnn.is_available()}
