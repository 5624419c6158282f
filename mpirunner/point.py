"""Measure one point of the sweep on every rank: its inputs, its timed steps, its checks and, on rank 0, its Run.
A rank out of memory fails the size on every rank alike (mpi/agreement.py) instead of leaving the others waiting."""
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("mpirunner")


def run_name(batch_size):
    """Name of a batch size's run group in the HDF5 file (zero-padded, so names sort by size)."""
    return f"bs{batch_size:05d}"


@dataclass(frozen=True)
class PointSetup:
    """What every point of the sweep shares, settled once by job.py."""

    config: Any
    world: Any
    backend: Any
    model: Any
    guard: Any
    faults: Any
    dtype: str
    flops_per_sample: Any
    roofs: Any

    def point(self, batch_size):
        from mpirunner.runfile.run import RunPoint

        return RunPoint.of(self.config, self.backend.local_replicas(), self.model.image_size, batch_size, self.dtype)

    def source_and_step(self, batch_size, micro_batches, agreement):
        """This rank's input source (reads --data-path; out of memory: every rank leaves) and its backend step,
        which the source follows (real data pairs each step's outputs with its labels)."""
        from mpirunner.data import make_input_source, step_shape

        shape = step_shape(batch_size, micro_batches, self.model.image_size)
        source = agreement.agree(lambda: make_input_source(self.config, self.backend, shape, self.model.input_dtype,
                                                           self.world.rank, world_size=self.world.size))
        step = self.backend.make_step(batch_size, source.next_input())
        source.follow(step)
        return source, step


def measure_point(setup, batch_size, keep):
    """Every rank measures `batch_size`; rank 0 keeps each Run at once. Returns None, or the OOM failure line."""
    from mpirunner.mpi.agreement import SizeAgreement, measure_or_fail

    def measure():
        if setup.config.scenario == "server":  # keeps each point itself (a peak search has several)
            from mpirunner.serve import server_points

            return server_points(setup, run_name(batch_size), batch_size, keep, agreement)
        return _measure(setup, batch_size, agreement)

    agreement = SizeAgreement(setup.world, setup.guard.checkpoints.reached)
    record, failure = measure_or_fail(agreement, setup.world, measure)
    if record is not None:  # rank 0, outside the agreement: writing the file is not a collective to agree on
        keep(record)
    return failure


def _measure(setup, batch_size, agreement):
    """One point on every rank, all collectives `agreement`'s; rank 0 gets its Run, the others None."""
    from mpirunner.console import print_check

    config, backend = setup.config, setup.backend
    point = setup.point(batch_size)
    announced = _announce_long_step(setup, point) if setup.world.is_root else False  # before the inputs are made
    source, backend_step = setup.source_and_step(batch_size, point.micro_batches_per_step, agreement)
    step = setup.faults.wrap_step(backend_step)
    if config.compile_only and backend.compiles_ahead():  # IPU: build the executable (cache), no timing
        log.info("--compile-only: compiled for batch size %d; nothing measured", batch_size)
        return None
    timings = _time_steps(setup, point, source, step, agreement, announced)
    agreement.barrier()  # this rank's steps are done (for --timeout too); a rank out of memory meets it at the latest
    gathered = agreement.stage("the gather of timings", lambda: timings, lambda rows: rows,
                               gather=lambda own, ok: _gather_timings(setup, own if ok else None))
    accuracy = _accuracy(setup, source, agreement)  # labelled real data; printed in the run block
    output_check = _output_check(setup, step, source, agreement) if config.check_outputs else None
    print_check(output_check)
    report = backend.run_report(batch_size)  # e.g. each rank's GPU peak memory; rank 0's goes into the record
    return agreement.stage("the gather of per-rank values", lambda: _rank_values(setup, timings, source, report),
                           lambda rank_values: _record(setup, point, gathered, timings, rank_values,
                                                       accuracy, [output_check], report))


def _gather_timings(setup, timings):
    """gather_timings at this rank's fault site; timings None (this rank failed): an empty row."""
    from types import SimpleNamespace

    from mpirunner.runfile.build import TIMING_ARRAYS, gather_timings

    world, faults = setup.world, setup.faults
    if timings is None:
        timings = SimpleNamespace(compile_seconds=float("nan"), **{name: () for name in TIMING_ARRAYS})
    elif not world.is_root:
        faults.at_stage("gather")
    gathered = gather_timings(world, timings)
    if world.is_root:
        faults.at_stage("gather")
    return gathered


def _accuracy(setup, source, agreement):
    """Rank 0's accuracy of labelled real data (None without labels: no collective then)."""
    from mpirunner.stats import accuracy_attrs

    def counts():
        setup.faults.at_stage("accuracy")
        return source.accuracy_counts()  # None on every rank alike when the data has no labels

    return agreement.stage("the accuracy gather", counts, lambda rows: accuracy_attrs(rows, setup.config.weights),
                           optional=True)


def _output_check(setup, step, source, agreement):
    """--check-outputs: rank 0's Check of every rank's step outputs against the float32 reference."""
    from mpirunner.checks.output_check import judge_ranks, output_numbers

    def numbers():
        setup.faults.at_stage("output-check")
        return output_numbers(setup.config, setup.backend, setup.model, step, source)

    return agreement.stage("the output check", numbers, lambda rows: judge_ranks(rows, setup.model))


def _rank_values(setup, timings, source, report):
    from mpirunner.runfile.build import rank_values_row

    setup.faults.at_stage("rank-values")
    return rank_values_row(setup.world.host, timings.barrier_wait_seconds, source, report)


def _time_steps(setup, point, source, step, agreement, announced):
    """The warm-up and timed steps under the stop rule, with a progress bar; an `announced` first step (its
    StepEstimate or None; False: not announced) is watched while it runs."""
    from mpirunner.bench import choose_stop_rule, measure
    from mpirunner.console import progress_bar, progress_wanted

    config = setup.config
    stop_rule, keep_last_windows = choose_stop_rule(  # all ranks agree via world.max
        config.iterations, config.until_stable, config.stability_percentage, config.max_windows, config.min_duration)
    progress = progress_bar(setup.world, not progress_wanted(config.progress, config.no_progress),
                            None if stop_rule else config.iterations, f"batch {point.batch_size}")
    if announced is not False:
        step = _watched_first_step(setup, point, step, progress, announced)
    timings = measure(source.observe(step), source, config.iterations, config.warmup_iterations,
                      agreement.barrier, on_step=progress, stop_rule=stop_rule,
                      decide=agreement.decide, keep_last_windows=keep_last_windows, min_duration=config.min_duration)
    if progress:
        progress.close()
    return timings


def _announce_long_step(setup, point):
    """Rank 0: when the point's step is long (or the config another device family's), log what is computed and
    return the first estimate (None: announced without one); False when nothing is announced."""
    from mpirunner.backends import family_warning
    from mpirunner.console import first_step_line
    from mpirunner.first_step import estimate_step, quick_gemm_rate

    backend, model = setup.backend, setup.model
    if setup.config.compile_only and backend.compiles_ahead():  # nothing runs
        return False
    always = bool(family_warning(backend.name, setup.config))  # e.g. --device cpu on an -mk2 config
    rate = setup.roofs.peak_flops[0] if setup.roofs is not None else None  # --measure-peak: rank 0's roof
    rate_of = (lambda: quick_gemm_rate(model.compute_dtype, backend.roof_device())) if backend.measures_peak() else None
    estimate = estimate_step(setup.config, point.samples_per_step, setup.flops_per_sample, rate=rate,
                             rate_of=rate_of, always=always)
    if estimate is None and not always:
        return False
    log.info("%s", first_step_line(point, estimate))
    return estimate


def _watched_first_step(setup, point, step, progress, estimate):
    """Rank 0's step whose first call draws its progress on the bar and reports its time after."""
    from mpirunner.console import FirstCallProgress, watch_first_call

    backend, description = setup.backend, f"batch {point.batch_size}"

    def during():
        if not progress:
            return None
        counter = None
        if backend.name == "cpu" and not backend.first_call_compiles():  # eager CPU: each micro-batch is a forward
            counter = ForwardCounter(setup.model.module, point.micro_batches_per_step)
        return FirstCallProgress(progress, description, estimate, counter).start()

    return watch_first_call(step, setup.config.warmup_iterations + setup.config.iterations, description, during)


class ForwardCounter:
    """Counts the forward passes of `module` until remove(): micro-batches done of `total`."""

    def __init__(self, module, total):
        self.done, self.total = 0, total
        self.remove = module.register_forward_hook(self._count).remove

    def _count(self, *_):
        self.done += 1


def _record(setup, point, gathered, timings, rank_values, accuracy, checks, report):
    """Rank 0's Run of the point: timings, accuracy, checks, device facts, FLOPs and roofs."""
    from mpirunner.checks import ValidityRules
    from mpirunner.checks.scenario import scenario_checks
    from mpirunner.runfile.build import DeviceFacts, Gathered, Judging, build_run
    from mpirunner.serve import single_stream_scenario

    config, backend = setup.config, setup.backend
    until_stable = config.until_stable
    measured = Gathered(gathered, rank_values, timings.measured_steps, windows=timings.windows if until_stable else 0,
                        windows_kept=timings.kept_windows if until_stable else 0, accuracy=accuracy)
    device = DeviceFacts({**report.attrs, "first_call_compiles": backend.first_call_compiles()},
                         backend.batch_latency_is_device_time(), setup.flops_per_sample, setup.roofs)
    scenario = single_stream_scenario(gathered, point.batch_size) if config.scenario == "single-stream" else None
    judged = scenario_checks(scenario.attrs, percentile=config.percentile) if scenario is not None else None
    return build_run(run_name(point.batch_size), point, measured, device,
                     Judging(ValidityRules.from_config(config), checks, judged), scenario)
