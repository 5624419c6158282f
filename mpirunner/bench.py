"""The measured loop: the first call timed alone, warm-up steps, a barrier, then timed steps (raw timings only).
As in torch.utils.benchmark's adaptive_autorange, a *stop rule* says after each window how many more steps
this rank wants, and `decide` (an MPI max-reduction; no MPI here) makes every rank run the same number."""
import math
import time
from dataclasses import dataclass, field
from typing import List

import numpy as np

STABLE_WINDOWS = 3  # --until-stable: this many consecutive windows must agree, and only they are kept
MIN_DURATION_MARGIN = 0.05  # --min-duration: ask for this share more steps than the pace says fill it


@dataclass
class Timings:
    """Raw timings of one rank for one run, in seconds; step_start relative to the barrier exit.
    windows were measured (blocks of steps asked for at once), kept_windows of them are in the arrays;
    warmup_seconds: the warm-up steps, timed as the others, so that a slow start can be told from warm-up."""

    compile_seconds: float
    step_start: np.ndarray
    step_seconds: np.ndarray
    batch_latency: np.ndarray
    barrier_wait_seconds: float = 0.0
    windows: int = 1
    kept_windows: int = 1
    measured_steps: int = 0
    warmup_seconds: np.ndarray = field(default_factory=lambda: np.zeros(0))


def windows_agree(windows, percentage):
    """True when every window's mean (throughput) and median (latency) step time lie within `percentage` % of
    the windows' average, as perf_analyzer requires of its last three windows."""
    if len(windows) < 2:
        return False
    limit = percentage / 100.0
    for centre in (np.mean, np.median):
        values = np.array([centre(np.asarray(window, dtype=np.float64)) for window in windows])
        average = values.mean()
        if average <= 0 or np.max(np.abs(values - average)) > limit * average:
            return False
    return True


def min_duration_rule(min_seconds, margin=MIN_DURATION_MARGIN):
    """Stop rule for --min-duration: ask for enough further steps (at the pace so far, +5%) to fill it."""

    def more_steps(window_seconds, elapsed_seconds):
        if elapsed_seconds >= min_seconds:
            return 0
        done = sum(len(window) for window in window_seconds)
        seconds_per_step = elapsed_seconds / max(done, 1)
        if seconds_per_step <= 0:
            return done
        return max(1, math.ceil((min_seconds - elapsed_seconds) * (1 + margin) / seconds_per_step))

    return more_steps


def first_window_steps(iterations, min_seconds, warmup_seconds, margin=MIN_DURATION_MARGIN):
    """Timed steps asked for at once: --iterations, or enough to fill --min-duration (+5%) at the warm-up's median
    pace, so that the ranks agree on the count before the timed window and not at a pause inside it."""
    pace = float(np.median(warmup_seconds)) if len(warmup_seconds) else 0.0
    if not min_seconds or pace <= 0:
        return iterations
    return max(iterations, math.ceil(min_seconds * (1 + margin) / pace))


def until_stable_rule(window_steps, percentage, max_windows, agree=windows_agree):
    """Stop rule for --until-stable: one more window until the last three agree or max_windows were run."""

    def more_steps(window_seconds, elapsed_seconds):
        count = len(window_seconds)
        done = count >= max_windows or count >= STABLE_WINDOWS and agree(window_seconds[-STABLE_WINDOWS:], percentage)
        return 0 if done else window_steps

    return more_steps


def choose_stop_rule(iterations, until_stable, stability_percentage, max_windows, min_duration):
    """(stop_rule, keep_last_windows) for the flags; (None, None): exactly `iterations` steps."""
    if until_stable:
        return until_stable_rule(iterations, stability_percentage, max_windows), STABLE_WINDOWS
    if min_duration:
        return min_duration_rule(min_duration), None
    return None, None


def measure(step, source, iterations, warmup_iterations, barrier, on_step=None,
            stop_rule=None, decide=lambda wanted: wanted, keep_last_windows=None, min_duration=None):
    """Run and time one configuration on this rank. step(input) -> (outputs, micro-batch latencies);
    stop_rule(window_seconds, elapsed_seconds) -> more steps wanted (None: exactly `iterations`); with
    min_duration the first window is sized from the warm-up (first_window_steps). The origin is read right after a
    barrier; in a second barrier the rank whose origin was earliest waits longest, so max - min of the waits over
    ranks estimates the origins' skew without a common clock."""
    first_input = source.next_input()
    start = time.perf_counter_ns()
    step(first_input)
    compile_seconds = (time.perf_counter_ns() - start) * 1e-9

    warmup_seconds = []
    for _ in range(warmup_iterations):
        step_input = source.next_input()
        begin = time.perf_counter_ns()
        step(step_input)
        warmup_seconds.append((time.perf_counter_ns() - begin) * 1e-9)
    wanted = iterations
    if min_duration:
        wanted = int(decide(first_window_steps(iterations, min_duration, warmup_seconds)))

    windows: List[dict] = []
    barrier()
    origin_ns = time.perf_counter_ns()
    barrier()
    barrier_wait_ns = time.perf_counter_ns() - origin_ns
    index = 0
    while wanted > 0:
        window = {"starts": [], "durations": [], "latencies": []}
        for _ in range(wanted):
            step_input = source.next_input()
            begin = time.perf_counter_ns()
            _, micro_batch_latencies = step(step_input)
            end = time.perf_counter_ns()
            window["starts"].append(begin - origin_ns)
            window["durations"].append(end - begin)
            window["latencies"].extend(micro_batch_latencies)
            if on_step is not None:
                on_step(index)
            index += 1
        windows.append(window)
        if stop_rule is None:
            break
        elapsed_seconds = (time.perf_counter_ns() - origin_ns - windows[0]["starts"][0]) * 1e-9  # since the first step
        window_seconds = [np.asarray(w["durations"], dtype=np.float64) * 1e-9 for w in windows]
        wanted = int(decide(int(stop_rule(window_seconds, elapsed_seconds))))

    kept = windows[-keep_last_windows:] if keep_last_windows else windows

    def joined(key):
        return np.asarray([value for w in kept for value in w[key]], dtype=np.float64)

    return Timings(compile_seconds=compile_seconds, step_start=joined("starts") * 1e-9,
                   step_seconds=joined("durations") * 1e-9, batch_latency=joined("latencies"),
                   barrier_wait_seconds=barrier_wait_ns * 1e-9, windows=len(windows), kept_windows=len(kept),
                   measured_steps=index, warmup_seconds=np.asarray(warmup_seconds, dtype=np.float64))
