"""The run's story: set up the world, place this rank, build the model once, then for each batch size
measure it, record it and write the file.

The parts are used in the order data flows through them: config -> world/placement -> models ->
backend -> data -> bench -> stats -> checks -> record -> results. Every rank measures; rank 0 alone
prints and writes.
"""
import datetime
import logging
import traceback

from mpirunner.errors import InvalidRunError, SweepCutShort, UsageError, WriteFailed

log = logging.getLogger("mpirunner")


def run_name(batch_size):
    """Name of a batch size's run group in the HDF5 file (zero-padded, so names sort by size)."""
    return f"bs{batch_size:05d}"


def run_job(config):
    from mpirunner.console import setup_rank_logging
    from mpirunner.faults import faults_from_environment
    from mpirunner.guard import start_guard
    from mpirunner.world import init_world

    world = init_world()
    setup_rank_logging(world, config.log_level)
    faults = faults_from_environment(world)  # MPIRUNNER_FAULT (tests only)
    guard = start_guard(world, config)  # --timeout watchdog, SIGTERM/SIGINT
    try:
        _run(config, world, guard, faults)
    except (UsageError, InvalidRunError, SweepCutShort, WriteFailed, KeyboardInterrupt):
        raise
    except Exception:  # a bug or a device failure on this rank: never leave the others waiting
        log.error("rank %d on %s failed:\n%s", world.rank, world.host, traceback.format_exc())
        if world.size > 1:
            guard.fail()  # MPI_Abort: the job ends within seconds; rank 0 says which runs the file keeps
        raise
    finally:
        guard.stop()


def _run(config, world, guard, faults):
    from mpirunner.output_file import settle_output

    created = datetime.datetime.now(datetime.timezone.utc)
    path, earlier, done = settle_output(world, config, created)  # writable, room, --resume: before any model
    if done and done.issuperset(config.batch_sizes):
        if world.is_root:
            print(f"--resume: every batch size is already in {path}; nothing to measure", flush=True)
        return
    from mpirunner.models.registry import check_model_name

    check_model_name(config.model)  # every rank alike, before placement or the backend log anything

    from mpirunner.backends import create_backend, family_warning
    from mpirunner.flops import count_flops_per_sample
    from mpirunner.models.assembly import build_benchmark_model, dtype_name
    from mpirunner.peak import measure_roofs
    from mpirunner.roofline import rank_roofs
    from mpirunner.placement import place_this_rank
    from mpirunner.provenance import job_attrs
    from mpirunner.report.job_text import hardware_line
    from mpirunner.memory import SizeAgreement, measure_or_fail
    from mpirunner.results import failed_run_result, run_result
    from mpirunner.sweep import SweepFile, after_each_size, finish
    from mpirunner.record import RunPoint
    from mpirunner.serve import check_scenario_backend

    backend = create_backend(config, world)
    world.agree(lambda: check_scenario_backend(config.scenario, backend.name))  # --device auto may pick the IPU
    if family_warning(backend.name, config):  # e.g. --device cpu on an -mk2 config: say how big a step is
        log.warning(family_warning(backend.name, config))
    if backend.unused_options():
        log.warning("the %s backend does not use: %s", backend.name, ", ".join(
            "--" + u.replace("_", "-") for u in backend.unused_options()))
    if config.random_weights and not config.weights:
        log.info("--random-weights: weights are random and seeded (--seed %d) on every rank", config.seed)
    placement = place_this_rank(config, world, preferred_node=backend.preferred_numa_node())

    model = world.agree(lambda: build_benchmark_model(config, backend.half_dtype()))  # reads --weights
    flops_per_sample = world.bcast(  # counted once, on the host model, before the backend takes it
        count_flops_per_sample(model.module, model.image_size, model.input_dtype) if world.is_root else None)
    backend.prepare(model.module, model.image_size)
    peak_column = {}  # /ranks columns (not placement): this rank's measured roofs
    if config.measure_peak and backend.measures_peak():
        log.info("--measure-peak: timing %s GEMMs and a streaming copy on every rank's %s",
                 dtype_name(model.compute_dtype), backend.roof_device())
        peak_column = measure_roofs(model.compute_dtype, device=backend.roof_device())
    rank_rows = world.gather({"rank": world.rank, "host": world.host, "local_rank": world.local_rank, **placement,
                              **peak_column, **backend.rank_info()})
    root_attrs = job_attrs(config, world, backend, model, created, rank_rows)
    roofs = (rank_roofs(rank_rows, model.module, model.image_size, model.input_dtype, model.compute_dtype)
                  if world.is_root and peak_column else None)
    if world.is_root:  # which hardware, once, before the first run block
        print(hardware_line(root_attrs, rank_rows), flush=True)

    sweep = SweepFile(path, root_attrs, rank_rows, earlier, guard) if world.is_root else None
    for batch_size in (config.query_size,) if config.scenario == "single-stream" else config.batch_sizes:
        if batch_size in done:  # --resume: already in the file
            continue
        guard.run_started(run_name(batch_size))
        agreement = SizeAgreement(world, guard.checkpoint)
        records, failure = measure_or_fail(agreement if config.scenario != "server" else None, world,
                                           lambda: list(_records(
                                               config, world, backend, model, batch_size, guard, faults,
                                               dtype=root_attrs["dtype"], flops_per_sample=flops_per_sample,
                                               roofs=roofs, agreement=agreement)))
        for record in filter(None, records or []):  # rank 0's measured runs
            sweep.keep(run_result(record), world.size)
        if failure is not None:
            point = RunPoint.of(config, backend.local_replicas(), model.image_size, batch_size, root_attrs["dtype"])
            sweep.keep(failed_run_result(run_name(batch_size), point, failure), world.size)
        after_each_size(world, guard, sweep)  # on disk before any rank starts the next run: a crash there keeps it
        guard.run_finished()
        if world.bcast(failure is not None if world.is_root else None):
            break  # out of memory: larger sizes will not fit either
    finish(world, sweep, path, "--compile-only: compiled every batch size; nothing measured, no file written")
    invalid = world.bcast(sweep.invalid() if world.is_root else None)
    if config.strict and invalid:  # after the file is written, on every rank alike
        raise InvalidRunError(f"--strict: {len(invalid)} invalid run(s): " + ", ".join(invalid))


def _records(config, world, backend, model, batch_size, guard, faults, *, dtype, flops_per_sample, roofs,
             agreement):
    """The runs of one batch size, each yielded as it is measured: one (offline, single-stream), or the
    server's point(s) (serve.py: one --target-qps, or every point of --find-peak-qps)."""
    if config.scenario != "server":
        yield _measure(config, world, backend, model, batch_size, guard, faults, dtype=dtype,
                       flops_per_sample=flops_per_sample, roofs=roofs, agreement=agreement)
        return
    from mpirunner.record import RunPoint
    from mpirunner.serve import server_points

    yield from server_points(config, world, backend, model, batch_size, guard, faults, name=run_name(batch_size),
                             point=RunPoint.of(config, backend.local_replicas(), model.image_size, batch_size, dtype),
                             flops_per_sample=flops_per_sample, roofs=roofs)


def _measure(config, world, backend, model, batch_size, guard, faults, *, dtype, flops_per_sample, roofs,
             agreement):
    """Measure one point of the sweep on every rank; rank 0 gets its RunRecord, the others None. Every
    collective until the steps end is one of `agreement`'s, so a rank out of memory can leave with the others."""
    from mpirunner.backends import family_warning
    from mpirunner.bench import choose_stop_rule, measure
    from mpirunner.checks import ValidityRules
    from mpirunner.checks.accuracy import gather_accuracy
    from mpirunner.checks.output_check import run_output_check
    from mpirunner.console import estimate_after_first_call, print_check, progress_bar, progress_wanted
    from mpirunner.data import make_input_source, step_shape
    from mpirunner.record import RunPoint, build_run_record
    from mpirunner.results import gather_timings
    from mpirunner.serve import single_stream_scenario

    point = RunPoint.of(config, backend.local_replicas(), model.image_size, batch_size, dtype)
    shape = step_shape(batch_size, point.micro_batches_per_step, model.image_size)
    source = world.agree(lambda: agreement.attempt(lambda: make_input_source(
        config, backend, shape, model.input_dtype, world.rank, world_size=world.size)))  # reads --data-path
    agreement.raise_pending()  # out of memory making the inputs, on this rank
    backend_step = backend.make_step(batch_size, source.next_input())
    source.follow(backend_step)  # real data pairs each step's outputs with its labels
    step = faults.wrap_step(backend_step)
    if world.is_root and family_warning(backend.name, config):
        step = estimate_after_first_call(step, config.warmup_iterations + config.iterations, f"batch {batch_size}")
    if config.compile_only and backend.compiles_ahead():  # IPU: build the executable (cache), no timing
        log.info("--compile-only: compiled for batch size %d; nothing measured", batch_size)
        return None
    stop_rule, keep_last_windows = choose_stop_rule(config.iterations, config.until_stable,
                                                    config.stability_percentage, config.max_windows,
                                                    config.min_duration)  # all ranks agree via world.max
    progress = progress_bar(world, not progress_wanted(config.progress, config.no_progress),
                            None if stop_rule else config.iterations, f"batch {batch_size}")
    timings = measure(source.observe(step), source, config.iterations, config.warmup_iterations,
                      agreement.barrier, on_step=progress, stop_rule=stop_rule,
                      decide=agreement.decide, keep_last_windows=keep_last_windows)
    if progress:
        progress.close()
    agreement.barrier()  # this rank's steps are done (for --timeout too); a rank out of memory is met here at the latest
    gathered = gather_timings(world, timings)
    accuracy = gather_accuracy(world, source, config.weights)  # labelled real data; printed in the run block
    output_check = run_output_check(config, world, backend, model, step, source) if config.check_outputs else None
    print_check(output_check)
    report = backend.run_report(batch_size)  # e.g. each rank's GPU peak memory
    rank_values = world.gather({"host": world.host, "barrier_wait_seconds": timings.barrier_wait_seconds,
                                "pool_steps": len(source.pool), "pool_bytes": source.pool_bytes,
                                **report.per_rank})
    if not world.is_root:
        return None
    return build_run_record(
        run_name(batch_size), point, ValidityRules.from_config(config), gathered, measured_steps=timings.measured_steps,
        windows=timings.windows if config.until_stable else 0,
        windows_kept=timings.kept_windows if config.until_stable else 0, rank_values=rank_values,
        checks=[accuracy, output_check],
        device_attrs={**report.attrs, "first_call_compiles": backend.first_call_compiles()},
        batch_latency_is_device_time=backend.batch_latency_is_device_time(), flops_per_sample=flops_per_sample,
        roofs=roofs,
        scenario=single_stream_scenario(gathered, batch_size) if config.scenario == "single-stream" else None)
