"""The roofs of this rank (`--measure-peak`): GEMM peak and memory bandwidth (STREAM's "copy" convention), the best
timed batch, with the median and count of batches beside it (a median far below the best: other load)."""
import statistics
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
    return {name: float(max(rates)), f"{name}_median": float(statistics.median(rates)), f"{name}_batches": len(rates)}


def gemm_rates(dtype, seconds=1.5, size=2048, device="cpu", repeats=4):
    """FLOP/s of each timed batch of `repeats` size x size x size matmuls (2 n^3 FLOPs each)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    a = torch.randn((size, size), generator=generator).to(device=device, dtype=dtype)
    b = torch.randn((size, size), generator=generator).to(device=device, dtype=dtype)
    return _batch_rates(lambda: torch.mm(a, b), 2.0 * size ** 3, device, seconds, repeats)


def copy_rates(seconds=1.0, array_bytes=None, device="cpu"):
    """Bytes/s of each timed batch of streaming copies (2 x array bytes moved each)."""
    import torch

    array_bytes = array_bytes or (GPU_STREAM_BYTES if torch.device(device).type == "cuda" else CPU_STREAM_BYTES)
    a = torch.ones(array_bytes // 4, dtype=torch.float32, device=device)
    b = torch.empty_like(a)
    return _batch_rates(lambda: b.copy_(a), 2.0 * a.numel() * 4, device, seconds, repeats=4)


def measure_roofs(dtype, device="cpu"):
    """This rank's /ranks roof columns (gemm_peak_flops: peak_flops' earlier name)."""
    flops = _roof_columns("peak_flops", gemm_rates(dtype, device=device))
    return {"gemm_peak_flops": flops["peak_flops"], **flops,
            **_roof_columns("peak_memory_bandwidth", copy_rates(device=device))}
