"""The run's story: set up the world, place this rank, build the model once, then for each batch size
measure it (point.py, every rank), record it and write the file (runfile/sweep.py, rank 0 alone)."""
import datetime
import logging
import traceback

from mpirunner.errors import InvalidRunError, SweepCutShort, UsageError, WriteFailed
from mpirunner.point import run_name

log = logging.getLogger("mpirunner")


def run_job(config):
    from mpirunner.console import setup_rank_logging
    from mpirunner.mpi.faults import faults_from_environment
    from mpirunner.mpi.guard import start_guard
    from mpirunner.mpi.world import init_world

    world = init_world()
    setup_rank_logging(world, config.log_level)
    faults = world.agree(lambda: faults_from_environment(world))  # MPIRUNNER_FAULT (tests only), agreed
    guard = start_guard(world, config)  # --timeout watchdog, SIGTERM/SIGINT
    try:
        _run(config, world, guard, faults)
    except (UsageError, InvalidRunError, SweepCutShort, WriteFailed, KeyboardInterrupt):
        raise
    except Exception:  # a bug or a device failure on this rank: never leave the others waiting
        log.error("rank %d on %s failed:\n%s", world.rank, world.host, traceback.format_exc())
        if world.size > 1:
            guard.ending.after_failure()  # MPI_Abort: every rank ends; rank 0 says which runs the file keeps
        raise
    finally:
        guard.stop()


def _run(config, world, guard, faults):
    from mpirunner.models.registry import check_model_name
    from mpirunner.models.weights import TORCHVISION, cached_torchvision_weights
    from mpirunner.placement import place_this_rank
    from mpirunner.point import PointSetup, measure_point
    from mpirunner.provenance import job_attrs
    from mpirunner.roofline import rank_roofs
    from mpirunner.runfile.block import hardware_line
    from mpirunner.runfile.output import settle_output
    from mpirunner.runfile.run import Job
    from mpirunner.runfile.sweep import Keeper, SweepFile, after_each_size, finish

    created = datetime.datetime.now(datetime.timezone.utc)
    path, earlier, done = settle_output(world, config, created)  # writable, room, --resume: before any model
    if done and done.issuperset(config.batch_sizes):
        if world.is_root:
            print(f"--resume: every batch size is already in {path}; nothing to measure", flush=True)
        return
    check_model_name(config.model)  # every rank alike, before placement or the backend log anything
    if config.weights == TORCHVISION:  # the cached file, found (or not) before anything is printed
        world.agree(lambda: cached_torchvision_weights(config.model))
    backend = _start_backend(config, world)
    _warn_about_device(config, backend)
    if config.random_weights and not config.weights:
        log.info("--random-weights: weights are random and seeded (--seed %d) on every rank", config.seed)
    placement = place_this_rank(config, world, preferred_node=backend.preferred_numa_node())

    model, flops_per_sample = _build_model(config, world, backend, faults)
    peak_column = _measure_peak(config, backend, model)  # /ranks columns (not placement): this rank's roofs
    rank_rows = world.gather({"rank": world.rank, "host": world.host, "local_rank": world.local_rank,
                              **placement, **peak_column, **backend.rank_info()})
    root_attrs = job_attrs(config, world, backend, model, created, rank_rows)
    roofs = None
    if world.is_root and peak_column:
        roofs = rank_roofs(rank_rows, model.module, model.image_size, model.input_dtype, model.compute_dtype)
    job = Job.from_attrs(root_attrs, rank_rows) if world.is_root else None  # the file's root and /ranks
    if world.is_root:  # which hardware, once, before the first run block
        print(hardware_line(job), flush=True)

    setup = PointSetup(config, world, backend, model, guard, faults, dtype=root_attrs["dtype"],
                       flops_per_sample=flops_per_sample, roofs=roofs)
    sweep = SweepFile(path, job, earlier, guard) if world.is_root else None
    keep = Keeper(sweep, world.size) if world.is_root else None  # each measured run into the file at once
    for batch_size in _sizes_to_measure(config, done):
        guard.run_started(run_name(batch_size))
        failure = measure_point(setup, batch_size, keep)  # failure: the line when a rank ran out of memory
        if failure is not None and world.is_root:
            _keep_failure(sweep, setup, batch_size, failure)
        after_each_size(world, guard, sweep)  # on disk before any rank starts the next run: a crash there keeps it
        guard.run_finished()
        if failure is not None:  # every rank has the line (the size's agreement)
            break  # out of memory: larger sizes will not fit either
    finish(world, sweep, path, "--compile-only: compiled every batch size; nothing measured, no file written")
    invalid = world.bcast(sweep.invalid() if world.is_root else None)
    if config.strict and invalid:  # after the file is written, on every rank alike
        raise InvalidRunError(f"--strict: {len(invalid)} invalid run(s): " + ", ".join(invalid))


def _start_backend(config, world):
    """The backend of --device on every rank, checked against the option table's refusals (auto may pick the IPU)."""
    from mpirunner.backends import create_backend
    from mpirunner.options import refuse

    backend = create_backend(config, world)
    world.agree(lambda: refuse(backend.name, config))
    return backend


def _warn_about_device(config, backend):
    """Say what differs on this device: a step's size on another family's config, flags the backend ignores."""
    from mpirunner.backends import family_warning

    warning = family_warning(backend.name, config)  # e.g. --device cpu on an -mk2 config
    if warning:
        log.warning(warning)
    unused = backend.unused_options()
    if unused:
        flags = ", ".join("--" + option.replace("_", "-") for option in unused)
        log.warning("the %s backend does not use: %s", backend.name, flags)


def _build_model(config, world, backend, faults):
    """The model on every rank (reads --weights), its FLOPs per sample counted once, handed to the backend."""
    from mpirunner.flops import count_flops_per_sample
    from mpirunner.models.assembly import build_benchmark_model

    model = world.agree(lambda: build_benchmark_model(config, backend.half_dtype()))
    flops_per_sample = world.bcast(  # counted once, on the host model, before the backend takes it
        count_flops_per_sample(model.module, model.image_size, model.input_dtype) if world.is_root else None)
    faults.slow_model(model.module)  # test-only MPIRUNNER_FAULT=slow
    backend.prepare(model.module, model.image_size)
    return model, flops_per_sample


def _measure_peak(config, backend, model):
    """--measure-peak: this rank's roof columns ({} without the flag or on a backend without it)."""
    from mpirunner.models.assembly import dtype_name
    from mpirunner.peak import measure_roofs

    if not (config.measure_peak and backend.measures_peak()):
        return {}
    log.info("--measure-peak: timing %s GEMMs and a streaming copy on every rank's %s",
             dtype_name(model.compute_dtype), backend.roof_device())
    return measure_roofs(model.compute_dtype, device=backend.roof_device())


def _sizes_to_measure(config, done):
    """The batch sizes in order (single-stream: its --query-size), less those --resume found in the file."""
    sizes = (config.query_size,) if config.scenario == "single-stream" else config.batch_sizes
    return [batch_size for batch_size in sizes if batch_size not in done]


def _keep_failure(sweep, setup, batch_size, failure):
    """Rank 0 adds the size that could not be measured, with its failure line, to the file."""
    from mpirunner.runfile.build import failed_run

    sweep.keep(failed_run(run_name(batch_size), setup.point(batch_size), failure), setup.world.size)
