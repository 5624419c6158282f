"""torch.compile for inference, shared by the CPU and CUDA backends (`--compile inductor`)."""
import logging
import os
from pathlib import Path


def compile_module(module, batch_sizes, cache_path=None):
    """torch.compile with inductor for inference: static shapes, weight freezing, one graph per batch size (so the
    recompile limit, past which dynamo silently falls back to eager, is raised to cover the sweep)."""
    import torch
    import torch._dynamo
    import torch._inductor.config as inductor_config

    if cache_path:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(cache_path) / "inductor")
    wanted = 2 * len(batch_sizes) + 8
    for name in ("recompile_limit", "cache_size_limit"):  # the older torch spelling second
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), wanted))
            break
    inductor_config.freezing = True
    # inductor's C++ toolchain lookup warns "No CUDA runtime is found" on CPU-only hosts: noise for a CPU run
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    return torch.compile(module, backend="inductor", dynamic=False)
