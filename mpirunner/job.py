"""One job: set up the world, build the model once, then measure each batch size and write the file.

This is the chain of DESIGN.md in order: config -> world/placement -> models -> backend -> data ->
bench -> stats -> results. Rank 0 alone prints and writes; every rank measures.
"""
import datetime
import logging
import os
import sys
import traceback

from mpirunner import __version__
from mpirunner.errors import InvalidRunError, UsageError

log = logging.getLogger("mpirunner")


def _git_commit():
    """Commit of the mpirunner checkout, read from .git without shelling out ('' when not a checkout)."""
    from pathlib import Path

    git = Path(__file__).resolve().parent.parent / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = head[5:]
            ref_file = git / ref
            if ref_file.exists():
                return ref_file.read_text().strip()
            for line in (git / "packed-refs").read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split()[0]
            return ""
        return head
    except OSError:
        return ""


def _decide_together(world, check):
    """Run a check on rank 0 only and raise its UsageError on every rank, so none is left waiting."""
    message = None
    if world.is_root:
        try:
            check()
        except UsageError as error:
            message = str(error)
    message = world.bcast(message)
    if message:
        raise UsageError(message)


def run_name(batch_size):
    """Name of a batch size's run group in the HDF5 file (zero-padded, so names sort by size)."""
    return f"bs{batch_size:05d}"


def _agreed(world, build):
    """Run a step that reads files (which may differ between hosts) and agree on its UsageError.

    A rank that alone returned with a usage error would leave the others waiting in the next
    collective; instead every rank raises the first rank's error, and all exit 2 together.
    """
    from mpirunner.world import first_error

    result, problem = None, None
    try:
        result = build()
    except UsageError as error:
        problem = str(error)
    found = first_error(problem) if world.size > 1 else (problem and (world.rank, world.host, problem))
    if found:
        rank, host, message = found
        raise UsageError(message if message == problem else f"{message} (seen by rank {rank} on {host})")
    return result


def _setup_rank_logging(world, level_name):
    """Rank 0 logs at the chosen level; other ranks only warnings, prefixed with rank and host."""
    handler = logging.StreamHandler(sys.stderr)
    prefix = "" if world.is_root else f"[rank {world.rank} {world.host}] "
    handler.setFormatter(logging.Formatter(prefix + "%(message)s"))
    log.handlers[:] = [handler]
    log.propagate = False
    level = getattr(logging, level_name.upper())
    log.setLevel(level if world.is_root else max(level, logging.WARNING))


def _progress(world, config, total, description):
    """on_step callback drawing a tqdm bar on rank 0 (stderr); None elsewhere or with --no-progress.

    The bar's clock restarts at the first timed step, so its rate is not diluted by the first call
    (compilation) and the warm-up, which it shows as a phase of their own.
    """
    if not world.is_root or config.no_progress:
        return None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=f"{description}: compile + warm-up", unit="step", leave=False, file=sys.stderr,
               dynamic_ncols=True)

    def on_step(index):
        if index == 0:
            bar.set_description(description)
            bar.reset(total=total)
        bar.update(1)

    on_step.close = bar.close
    return on_step


def run_job(config):
    from mpirunner.guard import start_guard
    from mpirunner.world import init_world

    world = init_world()
    _setup_rank_logging(world, config.log_level)
    guard = start_guard(world, config)  # --timeout watchdog, SIGTERM/SIGINT, MPIRUNNER_FAULT
    try:
        _run(config, world, guard)
    except (UsageError, InvalidRunError, KeyboardInterrupt):
        raise
    except Exception:  # a bug or a device failure on this rank: never leave the others waiting
        log.error("rank %d on %s failed:\n%s", world.rank, world.host, traceback.format_exc())
        if world.size > 1:
            guard.fail()  # MPI_Abort: the job ends within seconds; rank 0 says which runs the file keeps
        raise
    finally:
        guard.stop()


def _run(config, world, guard):
    from mpirunner.results import check_output_writable, output_path

    created = datetime.datetime.now(datetime.timezone.utc)
    path = world.bcast(str(output_path(config, created)) if world.is_root else None)
    _decide_together(world, lambda: check_output_writable(path, config.overwrite))
    from mpirunner.models.registry import check_model_name

    check_model_name(config.model)  # every rank alike, before placement or the backend log anything

    import torch

    from mpirunner.models.assembly import build_benchmark_model, dtype_name
    from mpirunner.flops import count_flops_per_sample
    from mpirunner.peak import measure_gemm_peak
    from mpirunner.backends import create_backend
    from mpirunner.placement import place_this_rank
    from mpirunner.results import write_results
    from mpirunner.world import detect_launcher

    backend = create_backend(config, world)
    unused = backend.unused_options()
    if unused:
        log.warning("the %s backend does not use: %s", backend.name, ", ".join("--" + u.replace("_", "-") for u in unused))
    if config.random_weights and not config.weights:
        log.info("--random-weights: weights are random and seeded (--seed %d) on every rank", config.seed)
    placement = place_this_rank(config, world, preferred_node=backend.preferred_numa_node())

    model = _agreed(world, lambda: build_benchmark_model(config, backend.half_dtype()))  # reads --weights
    flops_per_sample = world.bcast(  # counted once, on the host model, before the backend takes it
        count_flops_per_sample(model.module, model.image_size, model.input_dtype) if world.is_root else None)
    backend.prepare(model.module, model.image_size)
    if config.measure_peak and "measure_peak" in backend.used_options:
        log.info("--measure-peak: timing %s GEMMs on every rank's CPUs", dtype_name(model.compute_dtype))
        placement["gemm_peak_flops"] = measure_gemm_peak(model.compute_dtype)

    rank_row = {"rank": world.rank, "host": world.host, "local_rank": world.local_rank, **placement,
                **backend.rank_info()}
    rank_rows = world.gather(rank_row)
    root_attrs = {
        "mpirunner_version": __version__,
        "created": created.isoformat(timespec="seconds"),
        "argv": " ".join(config.argv),
        "config": config.settings(),
        "config_file_text": config.config_text,
        "config_name": config.name,
        "world_size": world.size,
        "hosts": sorted({row["host"] for row in rank_rows}) if world.is_root else [],
        "backend": backend.name,
        "launcher": detect_launcher(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID", ""),
        "torch_version": torch.__version__,
        "mpi_version": _mpi_version(),
        "poptorch_version": "",
        "git_commit": _git_commit(),
        "image_size": model.image_size,
        **model.precision_attrs(backend, config),  # dtype, weights_dtype, input_dtype, ...
        **backend.metadata(),
    }
    root_attrs.setdefault("device_name", backend.name)

    runs = []
    for batch_size in config.batch_sizes:
        guard.run_started(run_name(batch_size))
        run = _measure_one_batch_size(config, world, backend, model, batch_size, guard)
        if world.is_root and run is not None:
            run.attrs["dtype"] = root_attrs["dtype"]
            run.attrs.update(_compute_attrs(run, rank_rows, flops_per_sample))
            runs.append(run)
            with guard.writing(run.name, path):  # a signal waits for the write, then keeps this run
                write_results(path, root_attrs, rank_rows, runs)
            _print_run(run.attrs, world.size)
        guard.at_checkpoint(world.barrier)()  # the run is on disk before any rank starts the next: a crash there keeps it
        guard.run_finished()
    if world.is_root and runs:
        _print_table(runs)
        print(f"results written to {path}", flush=True)
    elif world.is_root:
        print("--compile-only: compiled every batch size; nothing measured, no file written", flush=True)
    invalid = world.bcast([f"{run.name} ({_verdict_text(run.attrs)})" for run in runs if not run.attrs["valid"]]
                          if world.is_root else None)
    if config.strict and invalid:  # after the file is written, on every rank alike
        raise InvalidRunError(f"--strict: {len(invalid)} invalid run(s): " + ", ".join(invalid))


def _measure_one_batch_size(config, world, backend, model, batch_size, guard):
    """Measure one point of the sweep on every rank; rank 0 gets its RunResult, the others None."""
    import numpy as np

    from mpirunner.bench import STABLE_WINDOWS, measure, min_duration_rule, until_stable_rule
    from mpirunner.accuracy import gather_accuracy
    from mpirunner.data import make_input_source, step_shape
    from mpirunner.output_check import apply_output_check_verdict, run_output_check
    from mpirunner.results import RunResult, gather_timings
    from mpirunner.stats import input_shares, log_histogram, summarize, verdict

    local_replicas = backend.local_replicas()
    micro_batches = config.device_iterations * local_replicas
    samples_per_step = batch_size * micro_batches
    shape = step_shape(batch_size, micro_batches, model.image_size)
    source = _agreed(world, lambda: make_input_source(config, backend, shape, model.input_dtype, world.rank,
                                                       world_size=world.size))  # reads --data-path
    backend_step = backend.make_step(batch_size, source.next_input())
    source.output_lag_steps = getattr(backend_step, "output_lag_steps", 0)  # real data pairs outputs with labels
    source.outputs_reused = getattr(backend_step, "reuses_outputs", True)
    step = guard.wrap_step(backend_step)  # MPIRUNNER_FAULT (tests)
    if config.compile_only and "compile_only" in backend.used_options:  # IPU: build the executable (cache), no timing
        log.info("--compile-only: compiled for batch size %d; nothing measured", batch_size)
        return None
    stop_rule, keep_last_chunks = None, None  # stop rules (validity): all ranks agree via world.max
    if config.until_stable:
        stop_rule = until_stable_rule(config.iterations, config.stability_percentage, config.max_windows)
        keep_last_chunks = STABLE_WINDOWS
    elif config.min_duration:
        stop_rule = min_duration_rule(config.min_duration)
    progress = _progress(world, config, None if stop_rule else config.iterations, f"batch {batch_size}")
    timings = measure(source.observe(step), source, config.iterations, config.warmup_iterations,
                      guard.at_checkpoint(world.barrier),
                      on_step=progress,
                      stop_rule=stop_rule, decide=guard.at_checkpoint(world.max), keep_last_chunks=keep_last_chunks)
    if progress:
        progress.close()
    guard.checkpoint()  # for --timeout: this rank's steps are done
    gathered = gather_timings(world, timings)
    accuracy = gather_accuracy(world, source)  # labelled real data only; counted outside the timed steps
    output_check = run_output_check(config, world, backend, model, step, source) if config.check_outputs else None
    barrier_waits = world.gather(timings.barrier_wait_seconds)
    hosts = world.gather(world.host)
    pools = world.gather((len(source.pool), source.pool_bytes))  # inputs made before timing: steps, bytes
    rank_values = world.gather(backend.rank_run_values(batch_size))  # e.g. each rank's GPU peak memory
    if not world.is_root:
        return None
    barrier_skew = float(max(barrier_waits) - min(barrier_waits))
    summary = summarize(gathered["step_start"], gathered["step_seconds"], gathered["batch_latency"],
                        samples_per_step, barrier_skew_seconds=barrier_skew)
    host_gap, device_busy = input_shares(gathered["step_start"], gathered["step_seconds"], gathered["batch_latency"])
    if not backend.batch_latency_is_device_time():
        device_busy = np.full_like(device_busy, np.nan)
    latencies = gathered["batch_latency"]
    counts, edges = log_histogram(latencies[~np.isnan(latencies)])
    attrs = {
        "batch_size": batch_size, "device_iterations": config.device_iterations,
        "input_pool_steps": int(pools[0][0]), "input_pool_bytes": int(max(row[1] for row in pools)),
        "input_pool_limit_bytes": config.input_pool_mib << 20,
        "host_gap_max": float(np.nanmax(host_gap)),
        "device_busy_min": float(np.nanmin(device_busy)) if np.any(np.isfinite(device_busy)) else float("nan"),
        "local_replicas": local_replicas, "samples_per_step": samples_per_step, "model": config.model,
        "data": config.data, "precision": config.precision,
        "image_size": model.image_size, "iterations": int(gathered["step_seconds"].shape[1]),
        "iterations_requested": config.iterations, "measured_steps": timings.measured_steps,
        "windows": timings.chunks if config.until_stable else 0,
        "windows_kept": timings.kept_chunks if config.until_stable else 0,
        "warmup": config.warmup_iterations,
        "compile_seconds_max": float(np.max(gathered["compile_seconds"])),
        "valid": True, "validity_reason": [],
        **summary, **backend.run_info(batch_size), **(accuracy or {}), **(output_check or {}),
    }
    apply_output_check_verdict(attrs)
    attrs["valid"], attrs["validity_reason"] = verdict(
        gathered["step_seconds"], timed_seconds=attrs["timed_seconds"], min_iterations=config.min_iterations,
        max_cv_percent=config.max_cv, min_duration=config.min_duration, hosts=hosts,
        until_stable=config.until_stable, window_steps=config.iterations,
        stability_percentage=config.stability_percentage, windows=attrs["windows"], max_windows=config.max_windows,
        existing_reasons=attrs.get("validity_reason", []), output_check_passed=attrs.get("output_check_passed"),
        host_gap=host_gap, device_busy=device_busy if np.any(np.isfinite(device_busy)) else None)
    return RunResult(name=run_name(batch_size), attrs=attrs,
                     extra_datasets={"histogram/counts": counts, "histogram/edges": edges,
                                     "barrier_wait_seconds": np.asarray(barrier_waits, dtype=np.float64),
                                     "host_gap": np.asarray(host_gap, dtype=np.float64),
                                     "device_busy": np.asarray(device_busy, dtype=np.float64),
                                     **{key: np.asarray([row[key] for row in rank_values]) for key in rank_values[0]}},
                     **gathered)


def _compute_attrs(run, rank_rows, flops_per_sample):
    """FLOPs per sample, achieved FLOP/s and, with --measure-peak, utilisation of the measured GEMM peak."""
    from mpirunner.flops import utilization_attrs
    from mpirunner.stats import per_rank_throughput

    rank_throughputs = per_rank_throughput(run.step_start, run.step_seconds, run.attrs["samples_per_step"])
    peaks = [row["gemm_peak_flops"] for row in rank_rows] if "gemm_peak_flops" in rank_rows[0] else None
    return utilization_attrs(flops_per_sample, run.attrs["throughput"], list(rank_throughputs),
                             [row["host"] for row in rank_rows], peaks)


def _mpi_version():
    from mpi4py import MPI

    return MPI.Get_library_version().strip().splitlines()[0]


def _print_run(attrs, world_size):
    """The per-run block; its last two lines match the reference harness's regexes."""
    print(f"\n== {attrs['model']} batch {attrs['batch_size']} x {attrs['device_iterations']} device iterations, "
          f"{world_size} rank(s), {attrs['precision']} ({attrs['dtype']}), data {attrs['data']}")
    print(f"latency ms: min {attrs['latency_min']:.3f}  p50 {attrs['latency_p50']:.3f}  "
          f"p90 {attrs['latency_p90']:.3f}  p99 {attrs['latency_p99']:.3f}  max {attrs['latency_max']:.3f}")
    print(f"compile: {attrs['compile_seconds_max']:.2f} s   step cv: {100 * attrs['step_cv']:.1f}%")
    busy = attrs["device_busy_min"]
    print(f"input: host gap {100 * attrs['host_gap_max']:.2f}% of the window (worst rank)   device busy "
          + (f"{100 * busy:.1f}% (least busy rank)" if busy == busy else "n/a (batch latency is not device time)")
          + f"   pool {attrs['input_pool_steps']} step(s), {attrs['input_pool_bytes'] / 2**20:.1f} MiB per rank")
    print(f"95% CI: throughput {attrs['throughput']:.2f} ± {attrs['throughput_ci95']:.2f} samples/sec   "
          f"p50 {attrs['latency_p50']:.3f} ± {attrs['latency_p50_ci95']:.3f} ms   "
          f"p99 {attrs['latency_p99']:.3f} ± {attrs['latency_p99_ci95']:.3f} ms   "
          f"({attrs['iterations']} steps, {attrs['timed_seconds']:.2f} s"
          + (f", {attrs['windows']} windows" if attrs.get("windows") else "") + ")")
    compute = f"compute: {attrs['achieved_flops'] / 1e9:.1f} GFLOP/s ({attrs['flops_per_sample'] / 1e9:.3f} GFLOP/sample)"
    if "utilization" in attrs:
        compute += (f", utilisation {100 * attrs['utilization']:.1f}% of the measured GEMM peak "
                    f"{attrs['peak_flops'] / 1e9:.1f} GFLOP/s")
    print(compute)
    print(_verdict_text(attrs))
    print(f"throughput: {attrs['throughput']:.2f} samples/sec")
    print(f"latency avg: {attrs['latency_mean']:.3f} ms", flush=True)


def _verdict_text(attrs):
    """`VALID`, or `INVALID: <reason>; <reason>` (the validity verdict of stats.verdict)."""
    reasons = attrs.get("validity_reason") or []
    if isinstance(reasons, str):
        reasons = [reasons]
    return "VALID" if attrs["valid"] else "INVALID: " + "; ".join(reasons)


def _print_table(runs):
    """The sweep summary: one row per batch size, every estimate as `x ± y` (95% CI), then the verdict."""
    print("\n batch  samples/step    throughput (samples/s)  sum of ranks        lat p50 ms        lat p99 ms  "
          "cv %  verdict")
    for run in runs:
        a = run.attrs
        throughput = f"{a['throughput']:.2f} ± {a['throughput_ci95']:.2f}"
        p50 = f"{a['latency_p50']:.3f} ± {a['latency_p50_ci95']:.3f}"
        p99 = f"{a['latency_p99']:.3f} ± {a['latency_p99_ci95']:.3f}"
        print(f"{a['batch_size']:6d}  {a['samples_per_step']:12d}  {throughput:>24s}  {a['throughput_sum']:12.2f}"
              f"  {p50:>16s}  {p99:>16s}  {100 * a['step_cv']:5.1f}  {_verdict_text(a)}")
