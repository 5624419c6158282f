"""A long first step is announced (issue 27, item 3): one line before it says what is computed, how big a step is and
a first estimate; a terminal shows progress while it runs; a quick run prints nothing new.

MPIRUNNER_LONG_STEP_SECONDS lowers the threshold so that a small model (made slow by MPIRUNNER_FAULT=slow) counts
as long. Whether the estimate is near the measured step depends on the load on the machine, so that comparison is
benchmarks/first_step_estimate.py, not a test."""
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from types import SimpleNamespace

from mpirunner.console import FirstCallProgress, duration_text, first_step_line, watch_first_call
from mpirunner.first_step import FLOOR_FLOPS, StepEstimate, estimate_step, long_step_seconds, point_steps
from tests.conftest import REPO, TINY, run_cli, tiny_config

LINE = re.compile(r"^batch (\d+): .* ([\d,]+) samples a step "
                  r".*estimate \(FLOPs / GEMM rate\) ([\d.]+) (s|min|h|days) a step")
FORCED = {"MPIRUNNER_LONG_STEP_SECONDS": "0", "MPIRUNNER_FAULT": "slow:seconds=0.2"}


def announcements(stderr):
    return [line for line in stderr.splitlines() if "samples a step" in line]


# ----------------------------------------------------------------------------- the line and the estimate

def point(**values):
    fields = dict(batch_size=12, device_iterations=128, local_replicas=1, samples_per_step=1536,
                  model="efficientnet-b4", precision="16.16", dtype="float16")
    return SimpleNamespace(**{**fields, **values})


def test_the_line_says_what_how_big_and_how_long_in_160_characters():
    line = first_step_line(point(), StepEstimate(step_seconds=5820.0, steps=23))
    assert len(line) <= 160, line
    assert line.startswith("batch 12: efficientnet-b4 16.16 float16, 1,536 samples a step (12 x 128 x 1 replica(s))")
    assert "97 min a step" in line and "37.2 h for 23 steps" in line
    huge = first_step_line(point(model="resnext101_64x4d-with-a-long-name", batch_size=123456, device_iterations=4096,
                                 local_replicas=16, samples_per_step=123456 * 4096 * 16, precision="16.32",
                                 dtype="bfloat16"), StepEstimate(3e7, 10 ** 6, at_least=True))
    assert len(huge) <= 160 and "samples a step" in huge and "a step" in huge, huge
    assert first_step_line(point(), None).endswith("no estimate before the first step")


def test_durations_read_as_a_person_reads_them():
    assert ([duration_text(s) for s in (0.0123, 4.56, 42, 600, 9000, 665640)]
            == ["0.012 s", "4.6 s", "42 s", "10 min", "2.5 h", "7.7 days"])


def test_a_quick_step_is_not_announced_and_no_gemm_is_timed_for_it():
    config = tiny_config(iterations=20, warmup_iterations=2)
    timed = []

    def rate_of():
        timed.append(1)
        return 1e11

    # resnet18 at 32 px, 8 samples: 0.6 GFLOP, under 10 s even at the floor rate
    assert estimate_step(config, 8, 75e6, rate_of=rate_of, threshold=10) is None
    assert not timed
    # a step of 2 TFLOP at 100 GFLOP/s x the CNN share: 40 s, long
    estimate = estimate_step(config, 1000, 2e9, rate_of=rate_of, threshold=10)
    assert timed and 10 < estimate.step_seconds < 100 and estimate.steps == 1 + 2 + 20
    assert estimate.point_seconds == estimate.step_seconds * 23
    # at or over the floor rate's reach, but fast on the measured rate: timed, not announced
    assert estimate_step(config, 100, 10 * FLOOR_FLOPS / 50, rate_of=rate_of, threshold=10) is None
    assert len(timed) == 2
    # `always` (a config of another device family): announced however quick
    assert estimate_step(config, 8, 75e6, rate=1e11, threshold=10, always=True) is not None


def test_the_point_counts_first_call_warm_up_and_timed_steps():
    assert point_steps(tiny_config(iterations=20, warmup_iterations=2), 5.0) == (23, False)
    assert point_steps(tiny_config(iterations=5, warmup_iterations=0, min_duration=60.0), 2.0) == (31, False)
    steps, at_least = point_steps(tiny_config(iterations=10, until_stable=True), 1.0)
    assert at_least and steps > 10


def test_the_threshold_variable_lowers_it_and_a_bad_value_keeps_the_default():
    assert long_step_seconds({}) == 10.0
    assert long_step_seconds({"MPIRUNNER_LONG_STEP_SECONDS": "0.5"}) == 0.5
    assert long_step_seconds({"MPIRUNNER_LONG_STEP_SECONDS": "soon"}) == 10.0
    assert long_step_seconds({"MPIRUNNER_LONG_STEP_SECONDS": "-1"}) == 10.0


def test_progress_runs_only_while_the_first_call_runs_and_its_time_is_said_after(caplog):
    shown = []

    class Watch:
        def __init__(self):
            self.running = True

        def stop(self):
            self.running = False
            shown.append("stopped")

        def resume(self):
            shown.append("resumed")

    def step(step_input):
        time.sleep(0.05)
        return step_input, [0.05]

    ticker = Watch()
    watched = watch_first_call(step, 9, "batch 4", during=lambda: ticker)
    with caplog.at_level("WARNING", logger="mpirunner"):
        assert watched("a") == ("a", [0.05])
        assert not ticker.running and shown == ["stopped", "resumed"]
        watched("b")
        watched("c")
    assert shown == ["stopped", "resumed"]  # the later calls are not watched
    (record,) = [r for r in caplog.records if "first step took" in r.getMessage()]
    assert "batch 4: the first step took" in record.getMessage() and "the 9 steps that follow" in record.getMessage()


def test_the_bar_shows_elapsed_against_the_estimate_and_micro_batches_left():
    class Bar:
        description = "batch 12: compile + warm-up"

        def __init__(self):
            self.shown, self.paused = [], 0

        def describe(self, text):
            self.shown.append(text)

        def pause(self):
            self.paused += 1

    class Counter:
        done, total, removed = 0, 128, False

        def remove(self):
            self.removed = True

    bar, counter = Bar(), Counter()
    progress = FirstCallProgress(bar, "batch 12", StepEstimate(600.0, 23), counter)
    progress.show(41.0)
    counter.done = 4
    progress.show(80.0)
    assert bar.shown == ["batch 12: first step 41 s of ~10 min",
                         "batch 12: first step 80 s of ~10 min, micro-batch 4/128, ~41 min left"]
    progress.start().stop()
    assert counter.removed and bar.paused == 1
    progress.resume()
    assert bar.shown[-1] == "batch 12: compile + warm-up"


# ----------------------------------------------------------------------------- the runner, as a user runs it

def test_a_quick_run_prints_nothing_new(tmp_path):
    result = run_cli([*TINY, "--batch-size", "1,4", "--iterations", "2", "--output", tmp_path / "quick.h5"])
    assert result.returncode == 0, result.stderr
    assert not announcements(result.stderr), result.stderr
    assert "first step took" not in result.stderr


def test_a_long_step_is_announced_once_per_point_before_it_runs(tmp_path):
    result = run_cli([*TINY, "--batch-size", "1,2", "--device-iterations", "3", "--iterations", "2",
                      "--output", tmp_path / "long.h5"], env=FORCED)
    assert result.returncode == 0, result.stderr
    lines = announcements(result.stderr)
    assert len(lines) == 2, result.stderr
    for line, batch_size in zip(lines, (1, 2)):
        found = LINE.match(line)
        assert found, line
        assert int(found.group(1)) == batch_size and found.group(2) == str(batch_size * 3)
        assert float(found.group(3)) > 0 and "resnet18 32.32 float32" in line and len(line) <= 160
    stderr = result.stderr.splitlines()
    for batch_size in (1, 2):  # the line comes before the point's first step; its measured time after it
        said = stderr.index(next(line for line in lines if line.startswith(f"batch {batch_size}:")))
        took = stderr.index(next(line for line in stderr
                                 if line.startswith(f"batch {batch_size}: the first step took")))
        assert said < took
    assert "\r" not in result.stderr  # not a terminal: the line, no progress


def test_a_terminal_sees_the_first_step_progress_by_micro_batch(tmp_path):
    """stderr on a pseudo-terminal: while the first step (4 micro-batches of 0.4 s at least) runs, the bar counts
    its micro-batches; once it has returned, the bar goes back to the warm-up."""
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))  # a window: tqdm sizes its bar by it
    command = [sys.executable, "-m", "mpirunner", "--model", "resnet18", "--image-size", "32", "--batch-size", "1",
               "--device-iterations", "4", "--iterations", "2", "--warmup-iterations", "1",
               "--output", str(tmp_path / "tty.h5")]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=secondary,
                               env={**os.environ, **FORCED, "MPIRUNNER_FAULT": "slow:seconds=0.4"})
    os.close(secondary)
    chunks = []
    while True:
        ready, _, _ = select.select([primary], [], [], 1.0)
        if ready:
            try:
                data = os.read(primary, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    process.wait(timeout=180)
    os.close(primary)
    screen = b"".join(chunks).decode(errors="replace")
    assert process.returncode == 0, screen
    frames = screen.replace("\r\n", "\n").replace("\r", "\n").splitlines()
    ticks = [frame for frame in frames if "batch 1: first step " in frame]
    assert ticks, screen
    assert any(re.search(r"micro-batch [1-4]/4, ~[\d.]+ (s|min) left", frame) for frame in ticks), screen
    took = next(i for i, frame in enumerate(frames) if "the first step took" in frame)
    assert all(frames.index(frame) < took for frame in ticks)  # the ticker stopped with the step
    assert len(announcements("\n".join(frames))) == 1
