"""Load scenarios on a fake step with a fixed service time and a virtual clock: exact, fast, no sleeping.

The fake device takes SERVICE_SECONDS per step whatever the batch, so with batching off (max batch
1) a server run is an M/D/1 queue and queueing theory gives the expected numbers.
"""
import math

import numpy as np
import pytest

from mpirunner import scenarios
from mpirunner.checks import scenario as scenario_rules

SERVICE_SECONDS = 1e-3
DRAIN_SECONDS = scenarios.drain_bound_seconds(SERVICE_SECONDS)


def fake_device(clock, service_seconds=SERVICE_SECONDS, stall=None):
    """step(batch_size) that advances the virtual clock; stall=(at, seconds): the first step begun at
    or after `at` takes `seconds` longer. Records the batch sizes it was called with."""
    calls = []

    def step(batch_size):
        calls.append(batch_size)
        if stall is not None and clock.now() >= stall[0] and not getattr(step, "stalled", False):
            step.stalled = True
            clock.advance(stall[1])
        clock.advance(service_seconds)

    step.calls = calls
    return step


def serve(rate, duration, seed=0, max_batch=1, max_wait=0.0, stall=None, service=SERVICE_SECONDS):
    clock = scenarios.VirtualClock()
    step = fake_device(clock, service, stall)
    schedule = scenarios.poisson_schedule(rate, duration, scenarios.schedule_rng(seed, 0))
    log = scenarios.run_server(step, clock, schedule, max_batch, max_wait, duration,
                               scenarios.drain_bound_seconds(service))
    return log, clock, step


def md1_mean_wait(rho, service):
    """Pollaczek-Khinchine for deterministic service: Wq = rho * S / (2 (1 - rho))."""
    return rho * service / (2 * (1 - rho))


def md1_wait_cdf(t, rate, service):
    """Erlang's M/D/1 waiting-time distribution: P(Wq <= t) = (1-rho) sum_{k<=t/S} e^{-x}x^k/k!,
    x = rate (k S - t). Alternating terms; fine in float64 for t up to ~20 S at rho < 1."""
    total = 0.0
    for k in range(int(math.floor(t / service)) + 1):
        x = rate * (k * service - t)
        total += x ** k / math.factorial(k) * math.exp(-x)
    return (1 - rate * service) * total


def md1_knee(bound, service, percentile):
    """Highest rate whose `percentile` of the sojourn time (wait + service) is within `bound`, analytically."""
    low, high = 0.0, 1.0 / service
    for _ in range(60):
        middle = (low + high) / 2
        if md1_wait_cdf(bound - service, middle, service) >= percentile / 100.0:
            low = middle
        else:
            high = middle
    return low


# -------------------------------------------------------------------------------------- schedules

def test_schedule_is_seeded_per_rank_and_has_the_asked_rate():
    one = scenarios.poisson_schedule(500.0, 20.0, scenarios.schedule_rng(3, 0))
    again = scenarios.poisson_schedule(500.0, 20.0, scenarios.schedule_rng(3, 0))
    other_rank = scenarios.poisson_schedule(500.0, 20.0, scenarios.schedule_rng(3, 1))
    np.testing.assert_array_equal(one, again)
    assert not np.array_equal(one[:100], other_rank[:100])
    expected = 500.0 * 20.0
    assert abs(len(one) - expected) < 4 * math.sqrt(expected)
    assert np.all(np.diff(one) >= 0) and one[0] >= 0 and one[-1] < 20.0
    gaps = np.diff(one)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)  # exponential gaps


def test_one_seed_gives_the_same_pattern_at_every_rate():
    slow = scenarios.poisson_schedule(100.0, 50.0, scenarios.schedule_rng(1, 0))
    fast = scenarios.poisson_schedule(300.0, 50.0, scenarios.schedule_rng(1, 0))
    np.testing.assert_allclose(fast[:len(slow)], slow / 3.0)


def test_rank_share_and_prepared_sizes():
    assert scenarios.rank_share(1000, 4) == 250.0
    assert scenarios.prepared_batch_sizes(8) == [1, 2, 4, 8]
    assert scenarios.prepared_batch_sizes(48) == [1, 2, 4, 8, 16, 32, 48]
    assert scenarios.prepared_batch_sizes(1) == [1]


# ---------------------------------------------------------------------------------------- queueing

@pytest.mark.parametrize("rho, queries", [(0.5, 100_000), (0.8, 400_000)])
def test_server_without_batching_waits_as_an_md1_queue(rho, queries):
    rate = rho / SERVICE_SECONDS
    log, _, _ = serve(rate, queries / rate, seed=0)
    assert log.served.all()
    assert log.wait().mean() == pytest.approx(md1_mean_wait(rho, SERVICE_SECONDS), rel=0.10)
    np.testing.assert_allclose(log.end - log.start, SERVICE_SECONDS)


def test_a_stall_shows_in_the_latency_of_every_query_scheduled_during_it():
    stall_at, stall_seconds = 2.0, 1.0
    log, _, step = serve(200.0, 6.0, seed=5, stall=(stall_at, stall_seconds))
    assert step.stalled
    stall_begin = float(log.start[log.start >= stall_at].min())
    stall_end = stall_begin + stall_seconds + SERVICE_SECONDS
    during = (log.scheduled >= stall_begin) & (log.scheduled < stall_end)
    assert during.sum() > 150  # ~200 queries arrive in that second
    latency = log.latency()[during]
    # each waited until the stalled step ended: latency counts from the scheduled arrival
    assert np.all(latency >= stall_end - log.scheduled[during])
    assert np.all(log.end[during] >= stall_end)
    assert latency.max() > 0.9
    # and well after the backlog cleared, latency is back to the service time
    late = log.scheduled > stall_end + 2.0
    assert np.median(log.latency()[late]) < 2 * SERVICE_SECONDS


def test_waiting_queries_are_batched_and_padded_to_a_prepared_size():
    clock = scenarios.VirtualClock()
    step = fake_device(clock, service_seconds=0.010)
    # one query at 0 occupies the device for 10 ms; five arrive meanwhile and run as one batch of 8
    scheduled = np.array([0.0, 0.001, 0.002, 0.003, 0.004, 0.005])
    log = scenarios.run_server(step, clock, scheduled, 8, 0.0, 1.0, DRAIN_SECONDS)
    assert step.calls == [1, 8]
    np.testing.assert_array_equal(log.batch_size, [1, 8, 8, 8, 8, 8])
    np.testing.assert_array_equal(log.batch_queries, [1, 5, 5, 5, 5, 5])
    np.testing.assert_allclose(log.start[1:], 0.010)
    summary = scenarios.summarize_queries(log, "server", duration_seconds=1.0)
    assert summary["padding_share"] == pytest.approx(1 - 6 / 9)


def test_batcher_waits_at_most_max_batch_wait_for_more():
    clock = scenarios.VirtualClock()
    step = fake_device(clock)
    # 0 and 0.003 wait together until 5 ms after the oldest arrived (the batch of 4 is not full);
    # 0.100 waits its full 5 ms for a query that comes only at 0.200; that one, the last, runs at once
    scheduled = np.array([0.0, 0.003, 0.100, 0.200])
    log = scenarios.run_server(step, clock, scheduled, 4, 0.005, 1.0, DRAIN_SECONDS)
    assert step.calls == [2, 1, 1]
    np.testing.assert_allclose(log.start, [0.005, 0.005, 0.105, 0.200])


def test_overload_ends_within_the_drain_bound_with_every_query_recorded():
    capacity = 1.0 / SERVICE_SECONDS
    duration = 5.0
    log, clock, _ = serve(3 * capacity, duration, seed=2)
    assert clock.now() <= duration + DRAIN_SECONDS + SERVICE_SECONDS
    assert len(log) == pytest.approx(3 * capacity * duration, rel=0.05)
    assert 0 < (~log.served).sum() < len(log)
    assert np.isnan(log.start[~log.served]).all() and np.isinf(log.latency()[~log.served]).all()
    summary = scenarios.summarize_queries(log, "server", duration_seconds=duration, target_qps=3 * capacity,
                                          latency_bound_seconds=0.1)
    assert summary["keep_up"] == pytest.approx(1 / 3, rel=0.05)
    assert summary["share_over_bound"] > 0.5
    reasons = scenario_rules.scenario_reasons(summary, drain_seconds=DRAIN_SECONDS)
    assert any(r.startswith("did not keep up: achieved 0.3") and "lower --target-qps or add instances" in r
               for r in reasons)
    assert any("queries unserved" in r for r in reasons)
    assert any("over the bound" in r for r in reasons)


def test_light_load_has_no_reasons():
    log, _, _ = serve(100.0, 10.0, seed=4)
    summary = scenarios.summarize_queries(log, "server", duration_seconds=10.0, target_qps=100.0,
                                          latency_bound_seconds=0.01)
    assert summary["keep_up"] > scenario_rules.KEEP_UP_SHARE
    assert summary["queries_unserved"] == 0
    assert scenario_rules.scenario_reasons(summary) == []


def test_single_stream_queries_come_from_the_timed_steps():
    """Single-stream runs through bench.measure; serve.py turns each rank's timed steps into queries."""
    from mpirunner.serve import single_stream_scenario

    seconds = np.full(20, 0.001)
    seconds[7] = 0.011  # a 10 ms stall in one query
    starts = np.concatenate([[0.0], np.cumsum(seconds)[:-1]])  # the next query is issued when one completes
    gathered = {"step_start": np.stack([starts, np.append(starts[:-1], np.nan)]),
                "step_seconds": np.stack([seconds, np.append(seconds[:-1], np.nan)])}  # rank 1: one step fewer
    record = single_stream_scenario(gathered, query_size=4)
    queries = record.queries
    assert queries["scheduled"].size == 39 and (queries["batch_size"] == 4).all() and queries["served"].all()
    np.testing.assert_array_equal(queries["scheduled"], queries["start"])
    assert list(np.bincount(queries["rank"])) == [20, 19]
    latency_ms = np.sort(1e3 * (queries["end"] - queries["start"]))
    np.testing.assert_allclose(latency_ms[:-2], 1.0)
    np.testing.assert_allclose(latency_ms[-2:], 11.0)
    assert record.attrs["query_latency_p50"] == pytest.approx(1.0)
    assert record.attrs["achieved_qps"] == pytest.approx(39 / 0.030)


def test_minimum_queries_per_percentile():
    assert [scenarios.minimum_queries(q) for q in (50.0, 90.0, 99.0, 99.9, 99.99)] == [2, 10, 100, 1000, 10000]


def test_percentile_counts_unserved_queries_as_over_any_bound():
    served = np.arange(1.0, 101.0)
    assert scenarios.latency_percentile(served, 50) == pytest.approx(np.percentile(served, 50))
    with_unserved = np.concatenate([served[:98], [np.inf, np.inf]])
    assert math.isinf(scenarios.latency_percentile(with_unserved, 99))
    assert scenarios.latency_percentile(with_unserved, 90) == pytest.approx(np.percentile(served[:98], 90 * 99 / 97))


def test_perf_clock_never_wakes_early():
    clock = scenarios.PerfClock()
    target = clock.now() + 0.005
    clock.wait_until(target)
    assert clock.now() >= target


# -------------------------------------------------------------------------------------- peak search

def test_peak_search_finds_the_md1_knee():
    """The knee is computed analytically (Erlang's M/D/1 waiting-time distribution), not by a scan."""
    bound, percentile, duration = 10 * SERVICE_SECONDS, 99.0, 150.0
    knee = md1_knee(bound, SERVICE_SECONDS, percentile)
    assert 0.7 < knee * SERVICE_SECONDS < 0.85  # sanity: the knee is well inside capacity

    def run_point(total_qps):
        return serve(total_qps, duration, seed=0)[0]

    search = scenarios.find_peak_qps(run_point, start_qps=400.0, latency_bound_seconds=bound,
                                     percentile=percentile, resolution=0.01)
    assert search.peak_qps == pytest.approx(knee, rel=0.05)
    assert any(not p.within_bound and p.total_qps > search.peak_qps for p in search.points)
    for point in search.points:
        assert point.within_bound == (point.percentile_seconds <= bound)
        assert len(point.result) == pytest.approx(point.total_qps * duration, rel=0.05)


@pytest.mark.parametrize("ranks", [1, 2, 16])
@pytest.mark.parametrize("percentile, needed", [(99.0, 120), (90.0, 12), (99.9, 1200)])
def test_a_search_point_runs_until_all_ranks_schedules_hold_enough_queries(ranks, percentile, needed):
    """At a low load --min-duration offers too few queries for the percentile: the point is lengthened until the
    schedules of all ranks together hold 1.2x the minimum, exactly (the seeded schedules, not an expectation);
    at a load where --min-duration offers enough it is kept as given."""
    def count(total_qps, seconds):
        return sum(len(scenarios.poisson_schedule(scenarios.rank_share(total_qps, ranks), seconds,
                                                  scenarios.schedule_rng(7, rank))) for rank in range(ranks))

    assert needed == math.ceil(scenarios.SEARCH_QUERY_MARGIN * scenarios.minimum_queries(percentile))
    for total_qps in (0.05 * needed, 0.3 * needed, 0.6 * needed):  # --min-duration 1 s offers 5-60% of them
        seconds = scenarios.search_point_seconds(total_qps, 1.0, percentile, seed=7, world_size=ranks)
        assert seconds > 1.0 and count(total_qps, seconds) == needed
        assert count(total_qps, seconds * (1 - 1e-6)) < needed  # no longer than it must be
        assert seconds == pytest.approx(needed / total_qps, rel=5 / math.sqrt(needed))  # about the expected time
    high = 50.0 * needed
    assert scenarios.search_point_seconds(high, 1.0, percentile, seed=7, world_size=ranks) == 1.0


def test_every_point_of_a_search_from_a_low_load_has_enough_queries_for_its_p99():
    """The search on the fake step from 20 QPS with --min-duration 0.5 s (10 queries at the first point): no point
    is INVALID for too few queries, and each point's duration is the one the search chose."""
    min_duration, bound = 0.5, 10 * SERVICE_SECONDS
    durations = {}

    def run_point(total_qps):
        durations[total_qps] = scenarios.search_point_seconds(total_qps, min_duration, 99.0, seed=0, world_size=1)
        return serve(total_qps, durations[total_qps], seed=0)[0]

    search = scenarios.find_peak_qps(run_point, start_qps=20.0, latency_bound_seconds=bound, percentile=99.0)
    assert search.points[0].total_qps == 20.0 and durations[20.0] > 8 * min_duration
    assert search.peak_qps == pytest.approx(md1_knee(bound, SERVICE_SECONDS, 99.0), rel=0.05)
    for point in search.points:
        summary = scenarios.summarize_queries(point.result, "server", duration_seconds=durations[point.total_qps],
                                              target_qps=point.total_qps, latency_bound_seconds=bound)
        assert len(point.result) >= 120 and summary["duration_seconds"] >= min_duration
        assert not any("too few" in reason for reason in scenario_rules.scenario_reasons(summary))
    first = scenarios.summarize_queries(serve(20.0, min_duration, seed=0)[0], "server", duration_seconds=min_duration,
                                        target_qps=20.0, latency_bound_seconds=bound)
    assert any("too few for a p99" in reason for reason in scenario_rules.scenario_reasons(first))  # --min-duration alone


def test_peak_search_decides_on_the_global_percentile_it_is_given():
    seen = []

    def run_point(total_qps):
        return serve(total_qps, 2.0, seed=0)[0]

    def nothing_passes(latency_seconds, percentile):
        seen.append(len(latency_seconds))
        return float("inf")

    search = scenarios.find_peak_qps(run_point, start_qps=400.0, latency_bound_seconds=0.01,
                                     global_percentile=nothing_passes, min_qps=50.0)
    assert search.peak_qps is None
    assert [p.total_qps for p in search.points] == [400.0, 200.0, 100.0, 50.0]
    assert seen == [len(p.result) for p in search.points]


# ----------------------------------------------------------------------------- flags and checks

@pytest.mark.parametrize("values, message", [
    ({"scenario": "server", "batch_size": "1,2", "target_qps": 5.0, "min_duration": 2.0}, "one --batch-size"),
    ({"scenario": "server", "min_duration": 2.0}, "needs --target-qps"),
    ({"scenario": "server", "target_qps": 5.0}, "needs --min-duration"),
    ({"find_peak_qps": True, "min_duration": 2.0}, "needs --latency-bound"),
    ({"scenario": "single-stream", "target_qps": 5.0}, "only used with --scenario server"),
    ({"scenario": "server", "target_qps": 5.0, "min_duration": 2.0, "device": "ipu"}, "not served on IPU"),
    ({"scenario": "single-stream", "device_iterations": 4}, "--device-iterations"),
])
def test_scenario_flags_that_cannot_work_are_usage_errors(values, message):
    from mpirunner.config import resolve_config
    from mpirunner.errors import UsageError

    with pytest.raises(UsageError, match=message):
        resolve_config(values)


def test_find_peak_qps_implies_server():
    from mpirunner.config import resolve_config

    config = resolve_config({"find_peak_qps": True, "latency_bound": 20.0, "min_duration": 2.0, "batch_size": "4"})
    assert config.scenario == "server"


def test_scenario_checks_carry_the_reasons_into_the_verdict():
    from mpirunner.checks import ValidityRules, decide_validity
    from mpirunner.checks.scenario import scenario_checks

    log, _, _ = serve(3 / SERVICE_SECONDS, 3.0, seed=1)
    summary = scenarios.summarize_queries(log, "server", duration_seconds=3.0, target_qps=3 / SERVICE_SECONDS)
    validity = decide_validity(np.full((1, 5), np.nan), ValidityRules(), timed_seconds=1.0,
                               scenario_checks=scenario_checks(summary, DRAIN_SECONDS))
    assert not validity.valid
    assert any(reason.startswith("did not keep up") for reason in validity.reasons)
    light, _, _ = serve(100.0, 3.0, seed=1)
    summary = scenarios.summarize_queries(light, "server", duration_seconds=3.0, target_qps=100.0)
    assert decide_validity(np.full((1, 5), np.nan), ValidityRules(), timed_seconds=1.0,
                           scenario_checks=scenario_checks(summary)).valid


def test_found_idle_means_the_ranks_previous_query_had_ended():
    log = scenarios.QueryLog(scheduled=np.array([0.0, 1.0, 2.0, 0.5, 0.6]), start=np.array([0.0, 1.5, 2.0, 0.5, 0.7]),
                             end=np.array([1.5, 1.9, 2.5, 0.7, 0.8]), batch_size=np.ones(5, dtype=np.int64),
                             batch_queries=np.ones(5, dtype=np.int64), served=np.ones(5, dtype=bool),
                             rank=np.array([0, 0, 0, 1, 1]))
    # rank 0: the second query arrives while the first runs; rank 1: the second arrives before the first ends
    assert log.found_idle().tolist() == [True, False, True, True, False]
