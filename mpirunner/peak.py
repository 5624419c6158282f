"""The roofs of this rank (`--measure-peak`): GEMM peak and memory bandwidth, on its CPUs or its GPU.

- GEMM peak: square matrix products in the run's dtype, large enough to be compute-bound, repeated
  for about `seconds`; the best batch counts.
- Memory bandwidth: a streaming copy (b = a) of arrays far larger than any cache, the best of
  repeated copies; each copy moves 2 x its size (read a, write b), STREAM's "copy" convention.
Every rank measures at the same time, so ranks sharing a host (or a GPU) share its roofs; on CUDA
the clock stops after torch.cuda.synchronize.
"""
import time

CPU_STREAM_BYTES = 256 << 20   # per array: far beyond the last-level cache of any current CPU
GPU_STREAM_BYTES = 1 << 30     # per array: far beyond a GPU's L2 (tens of MiB)


def _sync(device):
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _best_rate(work, units_per_call, device, seconds, repeats):
    """Best units/s over timed batches of `repeats` calls of work() for about `seconds`."""
    work()  # warm: kernel choice, first-touch of the pages
    _sync(device)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(repeats):
            work()
        _sync(device)
        best = max(best, repeats * units_per_call / (time.perf_counter() - start))
    return best


def measure_gemm_peak(dtype, seconds=1.5, size=2048, device="cpu"):
    """FLOP/s of the best of several timed batches of size x size x size matmuls (2 n^3 FLOPs each)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    a = torch.randn((size, size), generator=generator).to(device=device, dtype=dtype)
    b = torch.randn((size, size), generator=generator).to(device=device, dtype=dtype)
    return _best_rate(lambda: torch.mm(a, b), 2.0 * size ** 3, device, seconds, repeats=4)


def measure_memory_bandwidth(seconds=1.0, array_bytes=None, device="cpu"):
    """Bytes/s of the best of several timed batches of streaming copies (2 x array bytes moved each)."""
    import torch

    on_gpu = torch.device(device).type == "cuda"
    array_bytes = array_bytes or (GPU_STREAM_BYTES if on_gpu else CPU_STREAM_BYTES)
    a = torch.ones(array_bytes // 4, dtype=torch.float32, device=device)
    b = torch.empty_like(a)
    return _best_rate(lambda: b.copy_(a), 2.0 * a.numel() * 4, device, seconds, repeats=4)


def measure_roofs(dtype, device="cpu"):
    """This rank's /ranks roof columns: peak_flops (and gemm_peak_flops, its earlier name) and
    peak_memory_bandwidth (bytes/s)."""
    flops = measure_gemm_peak(dtype, device=device)
    return {"gemm_peak_flops": flops, "peak_flops": flops,
            "peak_memory_bandwidth": measure_memory_bandwidth(device=device)}
