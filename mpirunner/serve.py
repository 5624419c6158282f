"""The load scenarios on a real device (docs/scenarios.md): prepare every batch size the server may form, run
the seeded schedule on the run's clock, gather every rank's queries and build each point's Run; every rank
judges the gathered queries alike. Single-stream's queries are derived from bench.measure's steps."""
import logging
import time

import numpy as np

log = logging.getLogger("mpirunner")


def single_stream_scenario(gathered, query_size):
    """The ScenarioRecord of a single-stream run from the gathered step arrays ([ranks, steps], NaN-padded)."""
    from mpirunner.scenarios import QueryLog

    starts, seconds = gathered["step_start"], gathered["step_seconds"]
    ranks = np.broadcast_to(np.arange(starts.shape[0])[:, None], starts.shape)
    keep = ~np.isnan(seconds)
    start = starts[keep]
    queries = QueryLog(scheduled=start, start=start, end=start + seconds[keep],
                       batch_size=np.full(start.size, query_size, dtype=np.int64),
                       batch_queries=np.ones(start.size, dtype=np.int64), served=np.ones(start.size, dtype=bool),
                       rank=ranks[keep].astype(np.int64))
    return _scenario_record(queries, "single-stream", {})


def _scenario_record(queries, scenario, summary_args):
    from mpirunner.runfile.build import ScenarioRecord
    from mpirunner.scenarios import summarize_queries
    from mpirunner.stats import half_width, percentile_interval

    attrs = summarize_queries(queries, scenario, **summary_args)
    latency_ms = queries.latency()[queries.served] * 1e3
    for q in (50.0, 99.0):
        name = f"query_latency_p{q:g}"
        low, high = percentile_interval(latency_ms, q)  # NaN with too few
        attrs.update({f"{name}_ci95_low": low, f"{name}_ci95_high": high,
                      f"{name}_ci95": half_width(attrs[name], low, high) if np.isfinite(attrs[name]) else float("nan")})
    datasets = {name: getattr(queries, name) for name in ("scheduled", "start", "end", "rank", "batch_size",
                                                          "batch_queries", "served")}
    return ScenarioRecord(attrs=attrs, queries=datasets)


class PreparedSteps:
    """One ready step per batch size the server may form: compiled/captured, warmed up, its inputs pooled. A rank
    out of memory while preparing meets the others at the size's next point of `agreement`: all leave together."""

    def __init__(self, setup, max_batch, agreement):
        from mpirunner.errors import UsageError
        from mpirunner.scenarios import prepared_batch_sizes

        config, backend = setup.config, setup.backend
        self.sizes = prepared_batch_sizes(max_batch)
        self.steps, self.sources = {}, {}
        self.compile_seconds, self.slowest_step_seconds = 0.0, 0.0
        for size in self.sizes:
            source, backend_step = setup.source_and_step(size, 1, agreement)
            if agreement.decide(int(bool(backend_step.output_lag_steps))):  # every rank alike
                raise UsageError(f"--scenario {config.scenario} needs each step to return its own query's outputs; "
                                 f"add --min-latency (no IO overlap on {backend.name})")
            step = source.observe(setup.faults.wrap_step(backend_step))
            begin = time.perf_counter()
            step(source.next_input())  # the first call compiles / captures: timed on its own
            self.compile_seconds = max(self.compile_seconds, time.perf_counter() - begin)
            for _ in range(max(1, config.warmup_iterations)):
                begin = time.perf_counter()
                step(source.next_input())
                self.slowest_step_seconds = max(self.slowest_step_seconds, time.perf_counter() - begin)
            self.steps[size], self.sources[size] = step, source
            agreement.barrier()  # this size is ready on every rank; a rank out of memory meets it here
        self.largest = self.sources[self.sizes[-1]]

    def run(self, batch_size):
        return self.steps[batch_size](self.sources[batch_size].next_input())


def _batch_timings(queries, compile_seconds):
    """One Timings row per batch the server ran (batch_latency = its step time), for the usual arrays."""
    from mpirunner.bench import Timings

    starts, first = np.unique(queries.start[queries.served], return_index=True)
    seconds = queries.end[queries.served][first] - starts
    return Timings(compile_seconds=compile_seconds, step_start=starts, step_seconds=seconds,
                   batch_latency=seconds.copy(), measured_steps=int(starts.size))


class ServingFailed(RuntimeError):
    """An error on one rank after every batch size was prepared (the timed queries, the gathers): no agreement
    point follows, so it takes the job's failure path, even when memory ran out (its cause says what happened)."""


def server_points(setup, name, batch_size, keep, agreement):
    """Run the server scenario (one --target-qps, or a --find-peak-qps search), every rank alike; rank 0 hands
    each point's Run to `keep` at once (a search's peak_qps NaN until it ends, then amended). After preparation an
    out-of-memory error is a ServingFailed: measure_or_fail would answer it with a collective the others are not in."""
    world = setup.world
    prepared = PreparedSteps(setup, batch_size, agreement)
    try:
        _serve_prepared(setup, name, batch_size, prepared, keep)
    except Exception as error:
        from mpirunner.mpi.oom import is_out_of_memory

        if not is_out_of_memory(error):
            raise
        raise ServingFailed(f"rank {world.rank} ({world.host}) failed while serving batch size {batch_size} "
                            "after preparing it (the cause is above)") from error


def _serve_prepared(setup, name, batch_size, prepared, keep):
    """server_points' measurement once every batch size is prepared: the point(s), gathered, judged and kept."""
    from mpirunner.peak_qps import PointOutcome, find_peak_qps
    from mpirunner.scenarios import (PerfClock, concatenate_logs, drain_bound_seconds, poisson_schedule, rank_share,
                                     run_server, schedule_rng, search_point_seconds)

    config, world, backend, guard = setup.config, setup.world, setup.backend, setup.guard
    point = setup.point(batch_size)
    slowest = world.max(prepared.slowest_step_seconds)
    drain_seconds = drain_bound_seconds(slowest)
    bound = config.latency_bound / 1e3 if config.latency_bound is not None else None
    log.info("server: batch sizes %s prepared; drain bound %.1f s", prepared.sizes, drain_seconds)

    def record_of(queries, scenario, point_name):
        from mpirunner.checks import ValidityRules
        from mpirunner.checks.scenario import scenario_checks
        from mpirunner.runfile.build import DeviceFacts, Gathered, Judging, build_run, gather_timings, rank_values_row

        gathered = gather_timings(world, _batch_timings(queries, prepared.compile_seconds))
        report = backend.run_report(batch_size)
        rank_values = world.gather(rank_values_row(world.host, 0.0, prepared.largest, report))
        if not world.is_root:
            return None
        device = DeviceFacts(report.attrs, backend.batch_latency_is_device_time(), setup.flops_per_sample, setup.roofs)
        judging = Judging(ValidityRules.from_config(config), [], scenario_checks(scenario.attrs, drain_seconds))
        steps = int(gathered["step_seconds"].shape[1])
        return build_run(point_name, point, Gathered(gathered, rank_values, steps), device, judging, scenario)

    def measure(total_qps, point_name):
        """Serve one load -> PointOutcome, the same on every rank (rank 0's Run, None elsewhere)."""
        from mpirunner.checks.scenario import scenario_reasons

        # a search point runs long enough for scenarios.point_queries; one --target-qps run keeps --min-duration
        duration = (search_point_seconds(total_qps, config.min_duration, config.percentile, world.size)
                    if config.find_peak_qps else config.min_duration)
        schedule = poisson_schedule(rank_share(total_qps, world.size), duration, schedule_rng(config.seed, world.rank))
        guard.at_checkpoint(world.barrier)()
        clock = PerfClock()  # the run's clock starts at the barrier's exit
        queries = run_server(prepared.run, clock, schedule, batch_size, config.max_batch_wait_ms / 1e3, duration,
                             drain_seconds, rank=world.rank)
        guard.checkpoints.reached()
        every = concatenate_logs(world.allgather(queries))
        scenario = _scenario_record(every, "server", {
            "duration_seconds": duration, "target_qps": total_qps, "latency_bound_seconds": bound,
            "bound_percentile": config.percentile, "max_batch": batch_size})
        scenario.attrs.update(drain_seconds=drain_seconds, max_batch_wait_ms=config.max_batch_wait_ms,
                              prepared_batch_sizes=list(prepared.sizes), throughput=scenario.attrs["achieved_qps"],
                              throughput_sum=scenario.attrs["achieved_qps"])
        passed = not scenario_reasons(scenario.attrs, drain_seconds)  # the same on every rank
        return PointOutcome(every, duration, passed, record_of(queries, scenario, point_name))

    if not config.find_peak_qps:
        record = measure(config.target_qps, name).kept
        if record is not None:
            keep(record)
        return
    start_qps = config.target_qps or world.size * batch_size / max(slowest, 1e-9) / 2  # half the ranks' capacity
    kept = []  # rank 0's records of the points so far

    def run_and_keep(total_qps):
        outcome = measure(total_qps, f"{name}-qps{total_qps:012.3f}")
        if outcome.kept is not None:
            outcome.kept = outcome.kept.amended({"peak_search": True, "peak_point": len(kept),
                                                 "peak_qps": float("nan"), "peak_qps_high": float("nan")})
            keep(outcome.kept)
            kept.append(outcome.kept)
        return outcome

    search = find_peak_qps(run_and_keep, start_qps, config.percentile, bound_seconds=bound)
    log.info("peak search stopped: %s", search.stop_reason)
    if kept:  # rank 0; the peak is known now: each point says what the search found
        from mpirunner.runfile.block import peak_search_line

        found = {"peak_qps": search.peak_qps, "peak_qps_high": search.peak_qps_high}
        keep.amend([record.name for record in kept],
                   {key: float(value) if value is not None else float("nan") for key, value in found.items()})
        print(peak_search_line(search.peak_qps, [measured.offered_qps for measured in search.points], config.percentile,
                               config.latency_bound, batch_size, peak_qps_high=search.peak_qps_high), flush=True)
