"""What the runner shows while it runs: per-rank logging, the progress bar, and the lines of the checks
made after a run's timed steps (the output check; accuracy is in the run block). The per-run block and the sweep table are
report/text.py's, shared with mpirunner-report."""
import logging
import sys

log = logging.getLogger("mpirunner")


def setup_rank_logging(world, level_name):
    """Rank 0 logs at the chosen level; other ranks only warnings, prefixed with rank and host."""
    handler = logging.StreamHandler(sys.stderr)
    prefix = "" if world.is_root else f"[rank {world.rank} {world.host}] "
    handler.setFormatter(logging.Formatter(prefix + "%(message)s"))
    log.handlers[:] = [handler]
    log.propagate = False
    level = getattr(logging, level_name.upper())
    log.setLevel(level if world.is_root else max(level, logging.WARNING))


def progress_wanted(progress, no_progress, stream=None):
    """Whether to draw the bar: --progress / --no-progress decide; otherwise only when stderr is a terminal,
    so logs of job scripts and CI hold no carriage-return frames."""
    if progress or no_progress:
        return bool(progress)
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


def progress_bar(world, no_progress, total, description):
    """on_step callback drawing a tqdm bar on rank 0 (stderr); None elsewhere or when `no_progress`
    (see progress_wanted).

    The bar's clock restarts at the first timed step, so its rate is not diluted by the first call
    (compilation) and the warm-up, which it shows as a phase of their own. Call .close() when done.
    """
    if not world.is_root or no_progress:
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


def estimate_after_first_call(step, steps_after, description):
    """The step, logging after its first call how long the `steps_after` calls that follow will take
    (for a config run on a device family it was not written for, where one step can take minutes)."""
    import time

    calls = [0]

    def step_with_estimate(step_input):
        start = time.perf_counter()
        result = step(step_input)
        calls[0] += 1
        if calls[0] == 1:
            seconds = time.perf_counter() - start
            log.warning("%s: the first step took %.1f s; the %d steps that follow will take about %.0f s "
                        "(%.1f min)", description, seconds, steps_after, seconds * steps_after,
                        seconds * steps_after / 60)
        return result

    return step_with_estimate


def check_line(check):
    """The line a check made after the timed steps prints on rank 0 (None for checks that print nothing)."""
    a = check.attrs
    if check.name == "output_check":
        return (f"output check vs float32 eager reference: max abs error {a['output_check_max_abs_error']:.3g}, "
                f"relative error {a['output_check_rel_error']:.3g}, top-1 agreement "
                f"{100 * a['output_check_top1_agreement']:.1f}% "
                f"({100 * a['output_check_top1_agreement_within_ties']:.1f}% within ties): "
                f"{'passed' if check.passed else 'FAILED'}")
    return None


def print_check(check):
    """Print a check's line at once (rank 0 holds the check; other ranks pass None)."""
    line = check_line(check) if check is not None else None
    if line:
        print(line, flush=True)
