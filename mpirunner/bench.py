"""The measured loop: the first call timed alone, warm-up steps, a barrier, then timed steps.

bench returns raw timings only; every statistic is derived later from these arrays (stats.py).
Inputs are fetched before each step's clock starts, so making data is never timed.
"""
import time
from dataclasses import dataclass, field
from typing import List

import numpy as np


@dataclass
class Timings:
    """Raw timings of one rank for one run. Times in seconds; step_start relative to the barrier exit."""

    compile_seconds: float
    step_start: np.ndarray
    step_seconds: np.ndarray
    batch_latency: np.ndarray
    barrier_exit_ns: int = 0
    extra: dict = field(default_factory=dict)


def measure(step, source, iterations, warmup_iterations, barrier, on_step=None):
    """Run and time one configuration on this rank.

    step(input) -> (outputs, micro-batch latencies); source.next_input() -> the next step's input;
    barrier() aligns the ranks before timing starts; on_step(i) reports progress.
    """
    first_input = source.next_input()
    start = time.perf_counter_ns()
    step(first_input)
    compile_seconds = (time.perf_counter_ns() - start) * 1e-9

    for _ in range(warmup_iterations):
        step(source.next_input())

    starts_ns: List[int] = []
    durations_ns: List[int] = []
    latencies: List[float] = []
    barrier()
    origin_ns = time.perf_counter_ns()
    for index in range(iterations):
        step_input = source.next_input()
        begin = time.perf_counter_ns()
        _, micro_batch_latencies = step(step_input)
        end = time.perf_counter_ns()
        starts_ns.append(begin - origin_ns)
        durations_ns.append(end - begin)
        latencies.extend(micro_batch_latencies)
        if on_step is not None:
            on_step(index)
    return Timings(
        compile_seconds=compile_seconds,
        step_start=np.asarray(starts_ns, dtype=np.float64) * 1e-9,
        step_seconds=np.asarray(durations_ns, dtype=np.float64) * 1e-9,
        batch_latency=np.asarray(latencies, dtype=np.float64),
        barrier_exit_ns=origin_ns,
    )
