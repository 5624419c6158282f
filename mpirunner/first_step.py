"""A first estimate of a point's step time, before its first step: is the step long enough to announce?
(docs/methodology-and-validity.md, "A long first step"). No forward pass is run: a one-sample probe of
efficientnet-b4 in software float16 takes 5-10 s on a 2-core CPU, and another shape would recompile the model."""
import functools
import logging
import math
import os
from dataclasses import dataclass

log = logging.getLogger("mpirunner")

LONG_STEP_VARIABLE = "MPIRUNNER_LONG_STEP_SECONDS"
LONG_STEP_SECONDS = 10.0
GEMM_SIZE = 1024
GEMM_SECONDS = 0.25
SLOW_CALL_SECONDS = 0.1
CNN_SHARE = 0.5  # CNNs reach 0.3 (EfficientNet-B0) to 1.0 (ResNet-50, compiled) of it (benchmarks/RESULTS.md)
FLOOR_FLOPS = 0.5e9  # no device is slower (software bfloat16 on a 2-core CPU: about 1 GFLOP/s); below it: no GEMM


def long_step_seconds(environ=None):
    """The threshold above which a step is announced. Read on rank 0 alone, between collectives, so a value that
    is not a number >= 0 is warned about and the default used."""
    text = (os.environ if environ is None else environ).get(LONG_STEP_VARIABLE, "")
    try:
        seconds = float(text) if text else LONG_STEP_SECONDS
    except ValueError:
        seconds = float("nan")
    if not seconds >= 0:
        log.warning("%s=%s is not a number of seconds >= 0; using %g", LONG_STEP_VARIABLE, text, LONG_STEP_SECONDS)
        return LONG_STEP_SECONDS
    return seconds


@functools.lru_cache(maxsize=None)
def quick_gemm_rate(dtype, device):
    """FLOP/s of square matmuls in `dtype` on `device`, timed once per job and dtype. Sizes grow from 256: the
    first whose one call takes SLOW_CALL_SECONDS gives the rate (software float16 on a CPU is slow at 512
    already), else the best batch at GEMM_SIZE. Smaller GEMMs suffer far more from other load on shared cores
    (2 cores at a load of 6: 384-cubed 1-5 GFLOP/s, 1024-cubed 11-14; quiet: 150)."""
    from mpirunner.peak import gemm_rates

    size = 256
    while size < GEMM_SIZE:
        rate = gemm_rates(dtype, seconds=0.0, size=size, device=device, repeats=1)[0]  # one call, after a warm one
        if 2.0 * size ** 3 / rate >= SLOW_CALL_SECONDS:
            return rate
        size *= 2
    return max(gemm_rates(dtype, seconds=GEMM_SECONDS, size=GEMM_SIZE, device=device))


@dataclass(frozen=True)
class StepEstimate:
    """Seconds a step, and how many steps the point runs ('at least' under --until-stable)."""

    step_seconds: float
    steps: int
    at_least: bool = False

    @property
    def point_seconds(self):
        return self.step_seconds * self.steps


def point_steps(config, step_seconds):
    """(steps of the point, whether that is a lower bound): the first call, the warm-up and the timed steps."""
    timed, at_least = config.iterations, False
    if config.until_stable:
        from mpirunner.bench import STABLE_WINDOWS

        timed, at_least = config.iterations * STABLE_WINDOWS, True
    elif config.min_duration and step_seconds > 0:
        timed = max(timed, math.ceil(config.min_duration / step_seconds))
    return 1 + config.warmup_iterations + timed, at_least


def estimate_step(config, samples_per_step, flops_per_sample, rate=None, rate_of=None, threshold=None, always=False):
    """The StepEstimate of a point when its step is long (or `always`), else None."""
    threshold = long_step_seconds() if threshold is None else threshold
    step_flops = float(flops_per_sample or 0) * samples_per_step
    if not always and step_flops < threshold * FLOOR_FLOPS:
        return None
    if rate is None and rate_of is not None:
        rate = rate_of()
    if not rate or rate <= 0 or not step_flops:
        return None
    step_seconds = step_flops / (CNN_SHARE * rate)
    if not always and step_seconds <= threshold:
        return None
    steps, at_least = point_steps(config, step_seconds)
    return StepEstimate(step_seconds, steps, at_least)
