"""Load scenarios (docs/scenarios.md): who issues queries when, and what each query waited. No MPI, no torch: the
device is a `step(batch_size)` callable and time a Clock (VirtualClock in tests: a fake step advances it, so
queueing is checked without sleeping). Results are raw per-query timestamps (QueryLog), summarized afterwards."""
import bisect
import math
import time
from dataclasses import dataclass, fields

import numpy as np

SCHEDULE_STREAM = 0x5C4ED  # keeps the arrival stream apart from the data stream of the same seed
UNIT_GAPS_PER_DRAW = 4096  # gaps are drawn in fixed blocks, so a seed gives the same stream at every rate
DRAIN_MIN_SECONDS = 2.0    # after issuing stops, queued queries are served for at most
DRAIN_SLOWEST_STEPS = 10   # max(DRAIN_MIN_SECONDS, DRAIN_SLOWEST_STEPS x the slowest prepared step)
IN_FLIGHT_BATCHES = 2      # keep-up excuses this many full batches per rank still in flight when issuing stops
POINT_MINIMUM_MULTIPLE = 4  # a peak-search point holds 4 x the queries its percentile needs (p99: 1836) ...
POINT_MAX_SECONDS = 30.0    # ... or, where they take longer, this long (never fewer than the percentile needs)


class PerfClock:
    """The run's clock on real hardware: seconds of perf_counter since `origin` (read after the barrier)."""

    def __init__(self, origin=None):
        self.origin = time.perf_counter() if origin is None else origin

    def now(self):
        return time.perf_counter() - self.origin

    def wait_until(self, seconds):
        """Spin until `seconds`: a core woken from idle runs the next step slower (docs/scenarios.md)."""
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


def schedule_rng(seed, rank):
    """The arrival generator of one rank: seeded per rank (as data is), apart from the data stream."""
    return np.random.default_rng([int(seed), int(rank), SCHEDULE_STREAM])


def poisson_schedule(rate_per_second, duration_seconds, rng):
    """Arrival instants (s) on [0, duration) of a Poisson process conditioned on N = round(rate x duration)
    arrivals (docs/scenarios.md); one seed gives the same gaps at every rate, stretched."""
    count = int(math.floor(float(rate_per_second) * float(duration_seconds) + 0.5))
    if rate_per_second <= 0 or duration_seconds <= 0 or count == 0:
        return np.zeros(0, dtype=np.float64)
    unit = _unit_arrivals(rng, count + 1)
    return unit[:count] * (float(duration_seconds) / unit[count])


def _unit_arrivals(rng, count):
    """The first `count` arrivals of a rate-1 Poisson process, drawn UNIT_GAPS_PER_DRAW gaps at a time."""
    blocks, total, drawn = [], 0.0, 0
    while drawn < count:
        block = np.cumsum(rng.exponential(1.0, UNIT_GAPS_PER_DRAW)) + total
        blocks.append(block)
        total, drawn = float(block[-1]), drawn + block.size
    return np.concatenate(blocks)[:count]


def point_queries(percentile, total_qps=None, multiple=POINT_MINIMUM_MULTIPLE):
    """The queries a peak-search point holds, all ranks together: `multiple` x what its percentile needs, or
    POINT_MAX_SECONDS' worth where that is fewer, never fewer than the percentile needs."""
    from mpirunner.stats import minimum_count

    needed = minimum_count(percentile)
    wanted = int(multiple) * needed
    if total_qps is not None and total_qps > 0:
        wanted = min(wanted, max(needed, int(total_qps * POINT_MAX_SECONDS)))
    return wanted


def search_point_seconds(total_qps, min_duration_seconds, percentile, world_size, multiple=POINT_MINIMUM_MULTIPLE):
    """How long a peak-search point issues queries: point_queries over the ranks, or min_duration."""
    rate = rank_share(total_qps, world_size)
    if rate <= 0:
        return float(min_duration_seconds)
    per_rank = int(math.ceil(point_queries(percentile, total_qps, multiple) / int(world_size)))
    return max(float(min_duration_seconds), per_rank / rate)


def rank_share(total_qps, world_size):
    return float(total_qps) / int(world_size)


def prepared_batch_sizes(max_batch):
    """The batch sizes the server may run: powers of two below max_batch, and max_batch itself."""
    return [1 << power for power in range((int(max_batch) - 1).bit_length())] + [int(max_batch)]


def drain_bound_seconds(slowest_step_seconds):
    """How long queued queries are still served after issuing stops (see DRAIN_* above)."""
    return max(DRAIN_MIN_SECONDS, DRAIN_SLOWEST_STEPS * float(slowest_step_seconds))


@dataclass
class QueryLog:
    """Raw per-query record of one rank (or several, concatenated), seconds on the run's clock. batch_size: the
    prepared size its batch ran at (padding included); batch_queries: the real queries in it. Unserved: NaN."""

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
    return QueryLog(*(np.concatenate([getattr(log, f.name) for log in logs]) for f in fields(QueryLog)))


def run_server(step, clock, scheduled, max_batch, max_batch_wait_seconds, duration_seconds, drain_seconds, rank=0):
    """Serve queries arriving at `scheduled` (sorted, all before duration_seconds) on one device, batched as
    docs/scenarios.md says; no batch starts after duration + drain_seconds (queries not started are unserved)."""
    arrivals = [float(t) for t in scheduled]
    count, head = len(arrivals), 0
    log = QueryLog(scheduled=np.asarray(arrivals, dtype=np.float64), start=np.full(count, np.nan),
                   end=np.full(count, np.nan), batch_size=np.zeros(count, dtype=np.int64),
                   batch_queries=np.zeros(count, dtype=np.int64), served=np.zeros(count, dtype=bool),
                   rank=np.full(count, rank, dtype=np.int64))
    sizes = prepared_batch_sizes(max_batch)
    deadline = duration_seconds + drain_seconds
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


def summarize_queries(log, scenario, percentiles=(50.0, 90.0, 99.0), duration_seconds=None,
                      target_qps=None, latency_bound_seconds=None, bound_percentile=99.0, max_batch=1):
    """Flat summary of a (global) QueryLog: counts, QPS, latency percentiles (ms), padding, the bound, and keep_up
    (server: the share completed while issuing, IN_FLIGHT_BATCHES per rank counted in flight; docs/scenarios.md)."""
    from mpirunner.stats import percentile_upper_bound

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
        duration = float(duration_seconds)
        last_end = float(np.nanmax(log.end)) if served else 0.0
        window = max(duration, last_end)
        completed = int(np.count_nonzero(log.served & (log.end <= duration)))
        allowance = IN_FLIGHT_BATCHES * int(max_batch) * max(1, np.unique(log.rank).size)
        summary.update(duration_seconds=duration,
                       target_qps=float(target_qps) if target_qps is not None else float("nan"),
                       offered_qps=len(log) / duration, achieved_qps=served / window if window > 0 else float("nan"),
                       completed_while_issuing=completed, in_flight_allowance=allowance,
                       keep_up=min(1.0, (completed + allowance) / len(log)) if len(log) else float("nan"))
    elif served:
        window = float(np.nanmax(log.end) - np.nanmin(log.start))
        summary["achieved_qps"] = served / window if window > 0 else float("nan")
    if latency_bound_seconds is not None:
        summary["latency_bound"] = float(latency_bound_seconds) * 1e3
        summary["bound_percentile"] = float(bound_percentile)
        summary["bound_latency"] = latency_percentile(latency, bound_percentile) * 1e3
        upper = percentile_upper_bound(latency, bound_percentile)
        if not math.isnan(upper):
            summary["bound_latency_upper"] = upper * 1e3
        over = int(np.count_nonzero(latency > latency_bound_seconds))
        summary["queries_over_bound"] = over
        summary["share_over_bound"] = over / len(log) if len(log) else 0.0
    return summary
