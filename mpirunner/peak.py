"""GEMM peak of this rank's CPUs in the run's dtype (`--measure-peak`): the roof that utilisation is read against.

Square matrix products of a size large enough to be compute-bound, repeated for about
`seconds`; every rank measures at the same time, so ranks sharing a host share its roof.
"""
import time


def measure_gemm_peak(dtype, seconds=1.5, size=2048):
    """FLOP/s of the best of several timed batches of size x size x size matmuls (2 n^3 FLOPs each)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    a = torch.randn((size, size), generator=generator).to(dtype)
    b = torch.randn((size, size), generator=generator).to(dtype)
    flops_per_product = 2.0 * size ** 3
    torch.mm(a, b)  # let oneDNN pick and cache its kernel
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        repeats = 4
        for _ in range(repeats):
            torch.mm(a, b)
        elapsed = time.perf_counter() - start
        best = max(best, repeats * flops_per_product / elapsed)
    return best
