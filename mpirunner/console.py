"""What the runner shows while it runs: per-rank logging, the progress bar, the first step's progress and the
output check's line (the run block is runfile/block.py's)."""
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
    """on_step drawing a tqdm bar on rank 0, restarted at the first timed step; None elsewhere."""
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
    on_step.describe = lambda text: bar.set_description_str(text, refresh=True)  # other threads too: tqdm locks
    on_step.pause = bar.clear  # erase the bar, so that a log line is not written onto it
    on_step.description = f"{description}: compile + warm-up"
    return on_step


def duration_text(seconds):
    """A duration as a person reads it: '42 s', '12 min', '3.4 h', '7.7 days'."""
    if seconds < 1:
        return f"{seconds:.2g} s"
    if seconds < 120:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def first_step_line(point, estimate, max_chars=160):
    """The line said before a long point's first step: what is computed, its size, the estimate."""
    if estimate is None:
        guess = "no estimate before the first step"
    else:
        point_time = ("at least " if estimate.at_least else "") + duration_text(estimate.point_seconds)
        guess = (f"estimate (FLOPs / GEMM rate) {duration_text(estimate.step_seconds)} a step, "
                 f"{point_time} for {estimate.steps} steps")
    head = (f"batch {point.batch_size}: {point.model} {point.precision} {point.dtype}, "
            f"{point.samples_per_step:,} samples a step")
    parts = f" ({point.batch_size} x {point.device_iterations} x {point.local_replicas} replica(s))"
    line = f"{head}{parts}; {guess}"
    return line if len(line) <= max_chars else f"{head}; {guess}"[:max_chars]


class FirstCallProgress:
    """The progress bar while a long first call runs: every `interval` s a thread rewrites its description, e.g.
    'batch 12: first step 41 s of ~5 min, micro-batch 3/128, ~9 min left' (micro-batches where the backend lets
    them be counted: `counter`, with .done, .total and .remove()); stop() erases the bar for the line said next."""

    def __init__(self, progress, description, estimate, counter=None, interval=0.5):
        import threading

        self.progress, self.description, self.estimate, self.counter = progress, description, estimate, counter
        self.interval, self.stopped = interval, threading.Event()
        self.thread = threading.Thread(target=self._tick, name="mpirunner-first-step", daemon=True)

    def _tick(self):
        import time

        start = time.perf_counter()
        while not self.stopped.wait(self.interval):
            self.show(time.perf_counter() - start)

    def show(self, elapsed_seconds):
        text = f"{self.description}: first step {duration_text(elapsed_seconds)}"
        if self.estimate is not None:
            text += f" of ~{duration_text(self.estimate.step_seconds)}"
        counter = self.counter
        if counter is not None and counter.done:
            left = elapsed_seconds / counter.done * max(counter.total - counter.done, 0)
            text += f", micro-batch {min(counter.done, counter.total)}/{counter.total}, ~{duration_text(left)} left"
        self.progress.describe(text)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stopped.set()
        self.thread.join()
        if self.counter is not None:
            self.counter.remove()
        self.progress.pause()

    def resume(self):
        self.progress.describe(self.progress.description)


def watch_first_call(step, steps_after, description, during=None):
    """The step, its first call watched by during() (a started FirstCallProgress, or None); then a line says how
    long the call took and how long the `steps_after` calls that follow will take."""
    import time

    calls = [0]

    def step_with_watch(step_input):
        calls[0] += 1
        if calls[0] > 1:
            return step(step_input)
        watch = during() if during is not None else None
        start = time.perf_counter()
        try:
            result = step(step_input)
        finally:
            if watch is not None:
                watch.stop()
        seconds = time.perf_counter() - start
        log.warning("%s: the first step took %s; the %d steps that follow will take about %s",
                    description, duration_text(seconds), steps_after, duration_text(seconds * steps_after))
        if watch is not None:
            watch.resume()
        return result

    return step_with_watch


def print_check(check):
    """Print the output check's line at once (rank 0 holds the check; other ranks pass None)."""
    if check is not None and check.name == "output_check":
        a = check.attrs
        print(f"output check vs float32 eager reference: max abs error {a['output_check_max_abs_error']:.3g}, "
              f"relative error {a['output_check_rel_error']:.3g}, top-1 agreement "
              f"{100 * a['output_check_top1_agreement']:.1f}% "
              f"({100 * a['output_check_top1_agreement_within_ties']:.1f}% within ties): "
              f"{'passed' if check.passed else 'FAILED'}", flush=True)
