"""The roofs of this rank (`--measure-peak`): GEMM peak and memory bandwidth, on its CPUs or its GPU.

- GEMM peak: square matrix products in the run's dtype, large enough to be compute-bound, repeated
  for about `seconds`; the best batch counts.
- Memory bandwidth: a streaming copy (b = a) of arrays far larger than any cache, the best of
  repeated copies; each copy moves 2 x its size (read a, write b), STREAM's "copy" convention.
The roof is the best batch; the median batch and the number of batches are kept beside it, so that a
reader sees how far the batches spread (a median far below the best: other load during the timing).
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


def _batch_rates(work, units_per_call, device, seconds, repeats):
    """units/s of every timed batch of `repeats` calls of work(), batches run for about `seconds`."""
    work()  # warm: kernel choice, first-touch of the pages
    _sync(device)
    rates = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or not rates:
        start = time.perf_counter()
        for _ in range(repeats):
            work()
        _sync(device)
        rates.append(repeats * units_per_call / (time.perf_counter() - start))
    return rates


def _roof_columns(name, rates):
    """{name: the best rate, name_median: the median batch, name_batches: how many batches were timed}."""
    ordered = sorted(rates)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else 0.5 * (ordered[middle - 1] + ordered[middle])
    return {name: float(ordered[-1]), f"{name}_median": float(median), f"{name}_batches": len(ordered)}


def gemm_rates(dtype, seconds=1.5, size=2048, device="cpu"):
    """FLOP/s of each timed batch of size x size x size matmuls (2 n^3 FLOPs each)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    a = torch.randn((size, size), generator=generator).to(device=device, dtype=dtype)
    b = torch.randn((size, size), generator=generator).to(device=device, dtype=dtype)
    return _batch_rates(lambda: torch.mm(a, b), 2.0 * size ** 3, device, seconds, repeats=4)


def copy_rates(seconds=1.0, array_bytes=None, device="cpu"):
    """Bytes/s of each timed batch of streaming copies (2 x array bytes moved each)."""
    import torch

    on_gpu = torch.device(device).type == "cuda"
    array_bytes = array_bytes or (GPU_STREAM_BYTES if on_gpu else CPU_STREAM_BYTES)
    a = torch.ones(array_bytes // 4, dtype=torch.float32, device=device)
    b = torch.empty_like(a)
    return _batch_rates(lambda: b.copy_(a), 2.0 * a.numel() * 4, device, seconds, repeats=4)


def measure_gemm_peak(dtype, seconds=1.5, size=2048, device="cpu"):
    """FLOP/s of the best of several timed batches of size x size x size matmuls."""
    return max(gemm_rates(dtype, seconds, size, device))


def measure_memory_bandwidth(seconds=1.0, array_bytes=None, device="cpu"):
    """Bytes/s of the best of several timed batches of streaming copies."""
    return max(copy_rates(seconds, array_bytes, device))


def measure_roofs(dtype, device="cpu"):
    """This rank's /ranks roof columns: peak_flops (and gemm_peak_flops, its earlier name) and
    peak_memory_bandwidth (bytes/s), the best batch of each, with their _median and _batches columns."""
    flops = _roof_columns("peak_flops", gemm_rates(dtype, device=device))
    return {"gemm_peak_flops": flops["peak_flops"], **flops,
            **_roof_columns("peak_memory_bandwidth", copy_rates(device=device))}
