"""Load scenarios: who issues queries when, and what each query waited (single-stream, server, peak search).

Offline (steps back to back) is bench.measure. The two scenarios here issue *queries* instead:
- single-stream: one query at a time, the next issued when the previous one completes (run by
  bench.measure with steps of --query-size samples; serve.py derives its queries from the steps);
- server: queries arrive on a seeded Poisson schedule; while the device is busy they queue, and when
  it is free the waiting ones are batched (up to a maximum, waiting at most a set time for more).
  A query's latency runs from its SCHEDULED arrival to its completion, so time spent queued behind
  a slow step counts (no coordinated omission).

Like bench, this module knows nothing about MPI or torch: the device is a `step(batch_size)`
callable, time comes from a Clock (PerfClock for real runs, VirtualClock in tests, where a fake
step advances the clock by its service time, so queueing is checked exactly and without sleeping),
and the peak-QPS search takes the cross-rank part (every rank agreeing on a point's global
percentile) as a plain callable. Results are raw per-query timestamps (QueryLog); the summary is
derived from them afterwards, as LoadGen does from its log, and judged in checks/scenario.py.
"""
import bisect
import math
import time
from dataclasses import dataclass
from typing import Callable, List, Optional

import numpy as np

SCHEDULE_STREAM = 0x5C4ED  # keeps the arrival stream apart from the data stream of the same seed
UNIT_GAPS_PER_DRAW = 4096  # gaps are drawn in fixed blocks, so a seed gives the same stream at every rate
DRAIN_MIN_SECONDS = 2.0    # after issuing stops, queued queries are served for at most
DRAIN_SLOWEST_STEPS = 10   # max(DRAIN_MIN_SECONDS, DRAIN_SLOWEST_STEPS x the slowest prepared step)
PEAK_RESOLUTION = 0.02     # the peak search stops when its bracket is this narrow (relative)
PEAK_MAX_POINTS = 24
SEARCH_QUERY_MARGIN = 1.2  # a search point holds at least this many times the queries its percentile needs


# ---------------------------------------------------------------------------------------- clocks

class PerfClock:
    """The run's clock on real hardware: seconds of perf_counter since `origin` (read after the barrier)."""

    def __init__(self, origin=None):
        self.origin = time.perf_counter() if origin is None else origin

    def now(self):
        return time.perf_counter() - self.origin

    def wait_until(self, seconds):
        """Spin until `seconds`. Sleeping lets the core idle, and a CPU woken from idle ran resnet18's step
        20% slower (p50) and 50% slower (p99) than back to back; spinning keeps the rank as ready as
        single-stream keeps it, so low-load server latency is comparable with single-stream latency."""
        while self.now() < seconds:
            pass


class VirtualClock:
    """A clock that moves only when told: waiting jumps to the instant, a fake step advances it."""

    def __init__(self, start=0.0):
        self.seconds = float(start)

    def now(self):
        return self.seconds

    def wait_until(self, seconds):
        self.seconds = max(self.seconds, float(seconds))

    def advance(self, seconds):
        self.seconds += float(seconds)


# -------------------------------------------------------------------------------------- schedules

def schedule_rng(seed, rank):
    """The arrival generator of one rank: seeded per rank (as data is), apart from the data stream."""
    return np.random.default_rng([int(seed), int(rank), SCHEDULE_STREAM])


def poisson_schedule(rate_per_second, duration_seconds, rng):
    """Arrival instants (s) of a Poisson process of the given rate on [0, duration), sorted.

    Exponential unit gaps scaled by 1/rate: one seed gives the same pattern stretched to any rate
    (common random numbers), so the points of a peak search differ by their rate only.
    """
    if rate_per_second <= 0 or duration_seconds <= 0:
        return np.zeros(0, dtype=np.float64)
    horizon = rate_per_second * duration_seconds
    blocks = []
    for block in _unit_arrival_blocks(rng):
        blocks.append(block)
        if block[-1] >= horizon:
            break
    unit_arrivals = np.concatenate(blocks)
    return unit_arrivals[unit_arrivals < horizon] / rate_per_second


def _unit_arrival_blocks(rng):
    """Arrivals of a rate-1 Poisson process, UNIT_GAPS_PER_DRAW at a time (the stream every rate stretches)."""
    total = 0.0
    while True:
        block = np.cumsum(rng.exponential(1.0, UNIT_GAPS_PER_DRAW)) + total
        yield block
        total = float(block[-1])


def search_point_seconds(total_qps, min_duration_seconds, percentile, seed, world_size,
                         margin=SEARCH_QUERY_MARGIN):
    """How long a peak-search point issues queries: min_duration_seconds, or longer where that load would
    offer too few queries for the percentile to decide on (a p99 needs 100: minimum_queries).

    The point runs until the schedules of all ranks together hold ceil(margin x the minimum) queries (120
    for a p99). The schedules are seeded, so this is their actual count, not an expectation: every rank
    draws every rank's unit stream (the same one poisson_schedule stretches) and finds the instant that
    count is reached, with no collective, and all ranks get the same duration.
    """
    wanted = int(math.ceil(margin * minimum_queries(percentile)))
    rate = rank_share(total_qps, world_size)
    if rate <= 0:
        return float(min_duration_seconds)
    firsts = []
    for rank in range(int(world_size)):
        blocks, rng = [], schedule_rng(seed, rank)
        for block in _unit_arrival_blocks(rng):
            blocks.append(block)
            if sum(len(b) for b in blocks) >= wanted:
                break
        firsts.append(np.concatenate(blocks)[:wanted])
    last_needed = float(np.sort(np.concatenate(firsts))[wanted - 1]) / rate  # the wanted-th arrival of the job
    return max(float(min_duration_seconds), last_needed * (1.0 + 1e-9))  # arrivals are issued while < duration


def rank_share(total_qps, world_size):
    """Each rank's arrival rate: an equal share of the total."""
    return float(total_qps) / int(world_size)


def prepared_batch_sizes(max_batch):
    """The batch sizes the server may run: powers of two below max_batch, and max_batch itself."""
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return sizes + [int(max_batch)]


def drain_bound_seconds(slowest_step_seconds):
    """How long queued queries are still served after issuing stops (see DRAIN_* above)."""
    return max(DRAIN_MIN_SECONDS, DRAIN_SLOWEST_STEPS * float(slowest_step_seconds))


# --------------------------------------------------------------------------------- per-query log

@dataclass
class QueryLog:
    """Raw per-query record of one rank (or of several, concatenated). Seconds on the run's clock.

    batch_size: the prepared size the query's batch ran at (padding included); batch_queries: how
    many real queries that batch held. Unserved queries have served False and start/end NaN.
    """

    scheduled: np.ndarray
    start: np.ndarray
    end: np.ndarray
    batch_size: np.ndarray
    batch_queries: np.ndarray
    served: np.ndarray
    rank: np.ndarray

    def __len__(self):
        return len(self.scheduled)

    def latency(self):
        """end - scheduled per query; +inf for an unserved query (it is over any bound)."""
        return np.where(self.served, self.end - self.scheduled, np.inf)

    def wait(self):
        """start - scheduled per query (time queued before its batch began); +inf when unserved."""
        return np.where(self.served, self.start - self.scheduled, np.inf)

    def found_idle(self):
        """Per query: scheduled after its rank's previous query had ended (nothing ahead of it, no queueing)."""
        idle = np.zeros(len(self), dtype=bool)
        for rank in np.unique(self.rank):
            (index,) = np.nonzero(self.rank == rank)
            index = index[np.argsort(self.scheduled[index])]
            idle[index] = self.scheduled[index] > np.concatenate([[-np.inf], self.end[index][:-1]])
        return idle


def concatenate_logs(logs):
    """One QueryLog of several ranks' logs, each query keeping its rank."""
    return QueryLog(**{name: np.concatenate([getattr(log, name) for log in logs])
                       for name in ("scheduled", "start", "end", "batch_size", "batch_queries", "served", "rank")})


def _empty_log(scheduled, rank):
    count = len(scheduled)
    return QueryLog(scheduled=np.asarray(scheduled, dtype=np.float64), start=np.full(count, np.nan),
                    end=np.full(count, np.nan), batch_size=np.zeros(count, dtype=np.int64),
                    batch_queries=np.zeros(count, dtype=np.int64), served=np.zeros(count, dtype=bool),
                    rank=np.full(count, rank, dtype=np.int64))


# ----------------------------------------------------------------------------------------- engines

def run_server(step, clock, scheduled, max_batch, max_batch_wait_seconds, duration_seconds,
               drain_seconds, rank=0):
    """Serve queries arriving at `scheduled` (sorted, all before duration_seconds) on one device.

    When the device is free and queries wait: if fewer than max_batch wait and more are still to
    come, wait for more until the oldest waiting query has waited max_batch_wait_seconds (as
    Triton's dynamic batcher; the batcher does not peek at future arrivals). Then run the oldest
    min(waiting, max_batch) queries as one step, padded to the next prepared batch size.
    Issuing stops at duration_seconds; no batch starts after duration + drain_seconds, so the run
    ends at most one step later, and queries not started by then are unserved.
    """
    arrivals = [float(t) for t in scheduled]
    log = _empty_log(arrivals, rank)
    sizes = prepared_batch_sizes(max_batch)
    deadline = duration_seconds + drain_seconds
    count, head = len(arrivals), 0
    while head < count:
        now = clock.now()
        if now >= deadline:
            break
        if arrivals[head] > now:
            clock.wait_until(min(arrivals[head], deadline))
            continue
        arrived = bisect.bisect_right(arrivals, now, lo=head)
        waiting = arrived - head
        if waiting < max_batch and arrived < count:
            batch_deadline = arrivals[head] + max_batch_wait_seconds
            if now < batch_deadline:
                clock.wait_until(min(batch_deadline, arrivals[arrived], deadline))
                continue
        taken = min(waiting, max_batch)
        padded = sizes[bisect.bisect_left(sizes, taken)]
        begin = clock.now()
        step(padded)
        finish = clock.now()
        batch = slice(head, head + taken)
        log.start[batch], log.end[batch] = begin, finish
        log.batch_size[batch], log.batch_queries[batch] = padded, taken
        log.served[batch] = True
        head += taken
    return log


# ------------------------------------------------------------------------------------------ summary

def latency_percentile(latency_seconds, percentile):
    """Linear-interpolated percentile that keeps +inf (unserved) honest: inf once the rank reaches one."""
    values = np.sort(np.asarray(latency_seconds, dtype=np.float64).ravel())
    if values.size == 0:
        return float("nan")
    position = percentile / 100.0 * (values.size - 1)
    low, high = int(math.floor(position)), int(math.ceil(position))
    if low == high or values[low] == values[high]:
        return float(values[low])
    if math.isinf(values[high]):
        return float("inf")
    return float(values[low] + (values[high] - values[low]) * (position - low))


def minimum_queries(percentile):
    """Queries needed for the percentile to rest on at least one query beyond it."""
    if percentile >= 100:
        return 1
    return int(math.ceil(round(100.0 / (100.0 - percentile), 6)))  # 100 - 99.9 is 0.0999...: 1000, not 1001


def summarize_queries(log, scenario, percentiles=(50.0, 90.0, 99.0), duration_seconds=None,
                      target_qps=None, latency_bound_seconds=None, bound_percentile=99.0):
    """Flat summary of a (global) QueryLog: counts, QPS, latency percentiles (ms), padding, bound share.

    server: offered_qps = queries scheduled / duration (the realised Poisson load), achieved_qps =
    queries served / max(duration, last completion); keep_up = achieved / offered.
    single-stream: achieved_qps = queries / (last completion - first issue).
    """
    latency = log.latency()
    served = int(np.count_nonzero(log.served))
    summary = {"scenario": scenario, "queries": len(log), "queries_served": served,
               "queries_unserved": len(log) - served}
    if served:
        summary["query_latency_mean"] = float(np.mean(latency[log.served])) * 1e3
        summary["query_wait_mean"] = float(np.mean(log.wait()[log.served])) * 1e3
    for q in percentiles:
        summary[f"query_latency_p{q:g}"] = latency_percentile(latency, q) * 1e3
    slots = log.batch_size[log.served].astype(np.float64) / np.maximum(log.batch_queries[log.served], 1)
    summary["padding_share"] = float(1.0 - served / slots.sum()) if served else 0.0
    if scenario == "server":
        last_end = float(np.nanmax(log.end)) if served else 0.0
        window = max(float(duration_seconds), last_end)
        summary["duration_seconds"] = float(duration_seconds)
        summary["target_qps"] = float(target_qps) if target_qps is not None else float("nan")
        summary["offered_qps"] = len(log) / float(duration_seconds)
        summary["achieved_qps"] = served / window if window > 0 else float("nan")
        summary["keep_up"] = summary["achieved_qps"] / summary["offered_qps"] if len(log) else float("nan")
    elif served:
        window = float(np.nanmax(log.end) - np.nanmin(log.start))
        summary["achieved_qps"] = served / window if window > 0 else float("nan")
    if latency_bound_seconds is not None:
        summary["latency_bound"] = float(latency_bound_seconds) * 1e3
        summary["bound_percentile"] = float(bound_percentile)
        summary["bound_latency"] = latency_percentile(latency, bound_percentile) * 1e3
        summary["share_over_bound"] = float(np.mean(latency > latency_bound_seconds)) if len(log) else 0.0
    return summary


# -------------------------------------------------------------------------------------- peak search

@dataclass
class PeakPoint:
    """One measured point of a peak search: total QPS offered, its global percentile (s), pass/fail."""

    total_qps: float
    percentile_seconds: float
    within_bound: bool
    result: object = None


@dataclass
class PeakSearch:
    """The search's outcome: the highest passing total QPS (None if even the lowest failed) and every point."""

    peak_qps: Optional[float]
    points: List[PeakPoint]


def find_peak_qps(run_point: Callable, start_qps, latency_bound_seconds, percentile=99.0,
                  global_percentile: Callable = latency_percentile, resolution=PEAK_RESOLUTION,
                  max_points=PEAK_MAX_POINTS, min_qps=None):
    """Highest total QPS whose global percentile latency stays within the bound: bracket, then bisect.

    run_point(total_qps) -> this rank's QueryLog for a server run at that total load (the caller
    writes each point down as it likes); global_percentile(latency_seconds, percentile) -> the
    percentile over every rank's queries (an MPI gather in the job; local by default), so every
    rank sees the same number and takes the same path. Bracketing doubles (or halves) from
    start_qps until a pass and a fail are found; bisection stops when the bracket is narrower
    than `resolution` of its low end or after max_points points. Assumes latency grows with load.
    """
    floor = start_qps / 1024.0 if min_qps is None else min_qps
    points: List[PeakPoint] = []

    def measure(total_qps):
        log = run_point(total_qps)
        value = float(global_percentile(log.latency(), percentile))
        point = PeakPoint(total_qps, value, value <= latency_bound_seconds, log)
        points.append(point)
        return point.within_bound

    passing, failing = None, None
    qps = float(start_qps)
    while len(points) < max_points and (passing is None or failing is None):
        if measure(qps):
            passing = qps
            qps *= 2.0
        else:
            failing = qps
            if qps / 2.0 < floor:
                break
            qps /= 2.0
    if passing is None:
        return PeakSearch(None, points)
    while failing is not None and len(points) < max_points and (failing - passing) > resolution * passing:
        middle = (passing + failing) / 2.0
        if measure(middle):
            passing = middle
        else:
            failing = middle
    return PeakSearch(passing, points)
