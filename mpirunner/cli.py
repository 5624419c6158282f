"""The command line, the only module that knows argparse: options.py's flags (the reference run_benchmark.py's and
more), parsed without defaults for config.py; nothing heavy is imported, so `--help` and config errors are instant."""
import argparse
import logging
import sys
import time

from mpirunner import __version__
from mpirunner.config import describe_configs, resolve_config
from mpirunner.errors import InvalidRunError, SweepCutShort, UsageError, WriteFailed
from mpirunner.mpi.ending import EXIT_FAILED
from mpirunner.mpi.launcher import declared_world
from mpirunner.options import ACTION, BOOL, CHOICE, FLOAT_KINDS, INT_KINDS, OPTIONS, VERSION

EXIT_USAGE = 2
EXIT_INVALID = 3
EXIT_CUT_SHORT = 5  # a size failed (out of memory); the sweep stopped there, the file keeps the rest
QUIET_RANK_DELAY_SECONDS = 1.0  # a rank that does not print a usage error ends this much after rank 0


class _OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one-line UsageErrors (argparse's own prints the usage block on every rank of a job)."""

    def error(self, message):
        raise UsageError(f"{message}{_flag_suggestions(message)} (see --help)")


def _flag_suggestions(message):
    """'; did you mean --output?' for each misspelt flag in argparse's 'unrecognized arguments: ...' message."""
    import difflib

    if not message.startswith("unrecognized arguments:"):
        return ""
    flags = [o.flag for o in OPTIONS] + [f"--no-{o.flag[2:]}" for o in OPTIONS if o.negatable]
    words = [word.split("=", 1)[0] for word in message.split(":", 1)[1].split() if word.startswith("--")]
    hints = [(word, close[0]) for word in words if (close := difflib.get_close_matches(word, flags, n=1, cutoff=0.6))]
    if len(hints) == 1:
        return f"; did you mean {hints[0][1]}?"
    return f"; did you mean: {', '.join(f'{typed} -> {flag}' for typed, flag in hints)}?" if hints else ""


def _add(container, option):
    """One flag of the option table as an argparse argument (no default: the namespace holds what was typed)."""
    if option.kind == VERSION:
        container.add_argument(option.flag, action="version", version=f"mpirunner {__version__}", help=option.help)
        return
    kwargs = {"dest": option.dest, "help": option.help_text}
    if option.kind in (BOOL, ACTION):
        kwargs["action"] = argparse.BooleanOptionalAction if option.negatable else "store_true"
    elif option.kind == CHOICE:
        kwargs["choices"] = list(option.choices)
    elif option.kind in INT_KINDS:
        kwargs["type"] = int
    elif option.kind in FLOAT_KINDS:
        kwargs["type"] = float
    if option.metavar:
        kwargs["metavar"] = option.metavar
    container.add_argument(option.flag, **kwargs)


def build_parser():
    p = _OneLineParser(
        prog="python -m mpirunner",
        description="Benchmark CNN inference on every MPI rank and write one HDF5 file on rank 0. "
        "Run it alone, or under mpiexec / mpirun / srun / poprun for one instance per rank.",
        argument_default=argparse.SUPPRESS,
        epilog="Flags override the values of --config. Example: "
        "mpiexec -n 2 python -m mpirunner --config resnet50-cpu --batch-size 1,4,8 --iterations 20",
    )
    groups = {None: p}
    for option in OPTIONS:
        if option.group not in groups:
            groups[option.group] = p.add_argument_group(option.group)
        _add(groups[option.group], option)
    return p


def _is_first_rank():
    """Whether this process prints a usage error: rank 0, or any process outside MPI. The launcher's rank comes
    first: when it and MPI disagree (launcher.py), every process is rank 0 of its own one-rank world."""
    declared = declared_world()
    if declared is not None and declared.rank is not None:
        return declared.rank == 0
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        return mpi.COMM_WORLD.Get_rank() == 0
    return True


def _usage_error(error):
    """Rank 0 prints the one line; the other ranks wait a moment before they end, because a launcher
    (Open MPI's prterun) may end the whole job, and drop rank 0's line, when the first rank exits."""
    if _is_first_rank():
        print(f"mpirunner: error: {error}", file=sys.stderr, flush=True)
    else:
        time.sleep(QUIET_RANK_DELAY_SECONDS)
    return EXIT_USAGE


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        given = vars(build_parser().parse_args(argv))
        if given.get("list_configs"):
            print(describe_configs())
            return 0
        from mpirunner.mpi.world import agree  # no MPI without a launcher

        # under a launcher every rank learns of bad input any rank found (files may differ between hosts)
        config = agree(lambda: resolve_config(given, argv=["python -m mpirunner"] + argv))
        logging.basicConfig(level=getattr(logging, config.log_level.upper()), format="%(message)s", stream=sys.stderr)
        from mpirunner.job import run_job  # heavy imports (torch, mpi4py) start here

        run_job(config)
    except UsageError as error:
        return _usage_error(error)
    except InvalidRunError as error:
        print(f"mpirunner: {error}", file=sys.stderr)
        return EXIT_INVALID
    except SweepCutShort:  # its one line was printed when the size failed
        return EXIT_CUT_SHORT
    except WriteFailed as error:
        if _is_first_rank():
            print(f"mpirunner: {error}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    return 0
