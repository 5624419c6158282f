"""The command line: flags compatible with the reference run_benchmark.py, plus mpirunner's own.

Only this module knows argparse. Every flag is parsed with no default, so the namespace holds
exactly what the user typed; config.py layers it over the named config and the defaults.
Nothing heavy is imported here, so `--help` and config errors are instant.
"""
import argparse
import logging
import sys

from mpirunner import __version__
from mpirunner.config import DEFAULTS, config_names, describe_configs, resolve_config
from mpirunner.errors import InvalidRunError, UsageError

EXIT_USAGE = 2
EXIT_INVALID = 3


def _d(name):
    """Help-text suffix showing the built-in default of a flag."""
    value = DEFAULTS[name]
    return f" (default: {value})" if value not in (None, False) else ""


class _OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are UsageErrors: one line, printed by rank 0 only (argparse's own
    error prints the usage block on every rank of an mpiexec job)."""

    def error(self, message):
        raise UsageError(f"{message} (see --help)")


def build_parser():
    p = _OneLineParser(
        prog="python -m mpirunner",
        description="Benchmark CNN inference on every MPI rank and write one HDF5 file on rank 0. "
        "Run it alone, or under mpiexec / mpirun / srun / poprun for one instance per rank.",
        argument_default=argparse.SUPPRESS,
        epilog="Flags override the values of --config. Example: "
        "mpiexec -n 2 python -m mpirunner --config resnet50-cpu --batch-size 1,4,8 --iterations 20",
    )
    p.add_argument("--version", action="version", version=f"mpirunner {__version__}")
    p.add_argument("--list-configs", action="store_true", help="list the named configs and exit")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="log verbosity" + _d("log_level"))

    g = p.add_argument_group("what to run (reference run_benchmark.py flags)")
    g.add_argument("--config", help="a named config (see --list-configs) or a path to a YAML file")
    g.add_argument("--model", help="model name: resnet50, resnext101, efficientnet-b0..b7 or any torchvision classification model" + _d("model"))
    g.add_argument("--data", choices=["generated", "synthetic", "real"], help="input source: generated = random batches made before timing, copied host->device in every "
                        "step (host IO counted); synthetic = one batch placed on the device once (no host IO); "
                        "real = --data-path images decoded and staged before timing, copied in every step; "
                        "see docs/input-path.md" + _d("data"))
    g.add_argument("--batch-size", dest="batch_size", metavar="SIZES",
                   help="micro-batch size: one size (8), a list (1,2,4,8), a range (1..80) or a stepped range (8..80/8); "
                        "several sizes make a sweep, one run group each" + _d("batch_size"))
    g.add_argument("--iterations", type=int, help="timed steps per run" + _d("iterations"))
    g.add_argument("--device-iterations", dest="device_iterations", type=int,
                   help="micro-batches per step (IPU: poptorch deviceIterations)" + _d("device_iterations"))
    g.add_argument("--replicas", type=int, help="replicas per instance (IPU replication factor)" + _d("replicas"))
    g.add_argument("--precision", choices=["32.32", "16.16", "16.32"], help="weights.activations precision" + _d("precision"))
    g.add_argument("--half-partial", dest="half_partial", action="store_true", help="half-precision partials/accumulation where the device has it")
    g.add_argument("--eight-bit-io", dest="eight_bit_io", action="store_true", help="inputs travel as uint8; the model normalises on the device")
    g.add_argument("--normalization-location", dest="normalization_location", choices=["host", "device", "ipu", "none"],
                   help="where inputs are normalised ('ipu' is an alias of 'device')" + _d("normalization_location"))
    g.add_argument("--norm-type", dest="norm_type", choices=["batch", "group", "none"], help="normalisation layers of the model" + _d("norm_type"))
    g.add_argument("--norm-num-groups", dest="norm_num_groups", type=int, help="groups for --norm-type group" + _d("norm_num_groups"))
    g.add_argument("--norm-eps", dest="norm_eps", type=float, help="epsilon of the norm layers" + _d("norm_eps"))
    g.add_argument("--num-io-tiles", dest="num_io_tiles", type=int, help="IPU tiles reserved for IO overlap (0: none)" + _d("num_io_tiles"))
    g.add_argument("--efficientnet-group-dim", dest="efficientnet_group_dim", type=int,
                   help="channels per group of EfficientNet depthwise convs (1: depthwise; 16: the G16 variants)" + _d("efficientnet_group_dim"))
    g.add_argument("--efficientnet-expand-ratio", dest="efficientnet_expand_ratio", type=int,
                   help="expansion ratio of EfficientNet MBConv blocks" + _d("efficientnet_expand_ratio"))
    g.add_argument("--random-weights", dest="random_weights", action="store_true",
                   help="random weights (always the case unless --weights; accepted for compatibility)")
    g.add_argument("--model-cache-path", dest="model_cache_path", metavar="DIR", help="cache for compiled executables / compiled graphs")

    g = p.add_argument_group("device, inputs and numerics")
    g.add_argument("--device", choices=["auto", "cpu", "cuda", "ipu"], help="device family; auto picks ipu > cuda > cpu" + _d("device"))
    g.add_argument("--image-size", dest="image_size", type=int, help="input resolution (default: the model's own)")
    g.add_argument("--data-path", dest="data_path", metavar="DIR", help="image folder for --data real (class folders or flat)")
    g.add_argument("--input-pool-mib", dest="input_pool_mib", type=int, metavar="MIB",
                   help="host memory per rank for the inputs made before timing: generated data keeps at most 4 "
                        "distinct steps, real data a ring of staged steps, within this bound (always at least "
                        "one step)" + _d("input_pool_mib"))
    g.add_argument("--half-dtype", dest="half_dtype", choices=["float16", "bfloat16"], help="16-bit type (default: the device's native one)")
    g.add_argument("--weights", metavar="FILE", help="load a state_dict (strict) instead of seeded random weights")
    g.add_argument("--check-outputs", dest="check_outputs", action="store_true",
                   help="before timing, compare one batch against a float32 eager reference; disagreement makes the run invalid")
    g.add_argument("--channels-last", dest="channels_last", action=argparse.BooleanOptionalAction,
                   help="channels_last memory format on CPU/CUDA" + _d("channels_last"))
    g.add_argument("--compile", choices=["none", "inductor"], help="torch.compile the model (CPU/CUDA)" + _d("compile"))
    g.add_argument("--measure-peak", dest="measure_peak", action="store_true", help="measure each rank's GEMM peak and store the utilisation")
    g.add_argument("--seed", type=int, help="seed of weights and generated data (same on every rank)" + _d("seed"))

    g = p.add_argument_group("placement")
    g.add_argument("--numa-aware", dest="numa_aware", choices=["yes", "no"], help="pin each rank to its NUMA node's CPUs and memory" + _d("numa_aware"))
    g.add_argument("--threads", type=int, help="compute threads per rank (default: the rank's CPU share)")
    g.add_argument("--cpus-per-rank", dest="cpus_per_rank", type=int, help="CPUs given to each rank (default: an equal share of its node)")

    g = p.add_argument_group("measurement and validity")
    g.add_argument("--warmup-iterations", dest="warmup_iterations", type=int, help="untimed steps before timing" + _d("warmup_iterations"))
    g.add_argument("--min-iterations", dest="min_iterations", type=int, help="fewer timed steps make a run invalid" + _d("min_iterations"))
    g.add_argument("--min-duration", dest="min_duration", type=float, metavar="SECONDS", help="extend a run with more steps until it lasts this long")
    g.add_argument("--max-cv", dest="max_cv", type=float, metavar="PERCENT", help="coefficient of variation of step times above this is unstable" + _d("max_cv"))
    g.add_argument("--until-stable", dest="until_stable", action="store_true",
                   help="measure windows of --iterations steps until three agree within --stability-percentage")
    g.add_argument("--stability-percentage", dest="stability_percentage", type=float, help="agreement of stable windows" + _d("stability_percentage"))
    g.add_argument("--max-windows", dest="max_windows", type=int, help="most windows --until-stable measures" + _d("max_windows"))
    g.add_argument("--strict", action="store_true", help="exit with status 3 when a run is invalid")
    g.add_argument("--timeout", type=float, metavar="SECONDS", help="abort the job when a run takes longer than this on any rank")

    g = p.add_argument_group("IPU (poptorch)")
    g.add_argument("--exchange-memory-target", dest="exchange_memory_target", choices=["cycles", "balanced", "memory"],
                   help="poplar internal exchange optimisation target" + _d("exchange_memory_target"))
    g.add_argument("--min-latency", dest="min_latency", action="store_true",
                   help="favour latency over throughput (IPU: no exchange prefetch; CUDA: no IO overlap)")
    g.add_argument("--compile-only", dest="compile_only", action="store_true", help="compile (and cache) the executable, then exit")
    g.add_argument("--offline-target-ipu-version", dest="offline_target_ipu_version", type=int, help="IPU version to compile for without hardware")

    g = p.add_argument_group("CUDA")
    g.add_argument("--cuda-graphs", dest="cuda_graphs", action="store_true", help="capture each step as a CUDA graph and replay it")
    g.add_argument("--allow-gpu-sharing", dest="allow_gpu_sharing", action="store_true", help="allow more local ranks than visible GPUs")

    g = p.add_argument_group("output")
    g.add_argument("--output", metavar="PATH", help="HDF5 file to write (default: results/<config or model>-<UTC time>.h5)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    g.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bar")
    return p


def _is_first_rank():
    """Whether this process should print a usage error: rank 0, or any process outside MPI.

    Before MPI starts only the launcher's variables tell the rank; they are used for this and nothing else.
    """
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        return mpi.COMM_WORLD.Get_rank() == 0
    import os

    for variable in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID"):
        if variable in os.environ:
            return os.environ[variable] == "0"
    return True


def _usage_error(error):
    if _is_first_rank():
        print(f"mpirunner: error: {error}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def _agree_on_problem(problem):
    """Under a launcher, every rank learns whether any rank found bad input, so all exit 2 together
    (config files and folders may differ between hosts). Alone, no MPI is started for this."""
    from mpirunner.world import detect_launcher, first_error

    if detect_launcher() == "none":
        return problem
    found = first_error(None if problem is None else str(problem))
    if found is None:
        return None
    rank, host, message = found
    return problem if problem is not None else UsageError(f"{message} (seen by rank {rank} on {host})")


def _configure_logging(level_name):
    logging.basicConfig(level=getattr(logging, level_name.upper()), format="%(message)s", stream=sys.stderr)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        given = vars(parser.parse_args(argv))
    except UsageError as error:
        return _usage_error(error)
    if given.get("list_configs"):
        print(describe_configs())
        return 0
    try:
        config, problem = resolve_config(given, argv=["python -m mpirunner"] + argv), None
    except UsageError as error:
        config, problem = None, error
    problem = _agree_on_problem(problem)
    if problem is not None:
        return _usage_error(problem)
    _configure_logging(config.log_level)
    from mpirunner.job import run_job  # heavy imports (torch, mpi4py) start here

    try:
        run_job(config)
    except UsageError as error:
        return _usage_error(error)
    except InvalidRunError as error:
        print(f"mpirunner: {error}", file=sys.stderr)
        return EXIT_INVALID
    return 0


__all__ = ["main", "build_parser", "config_names"]
