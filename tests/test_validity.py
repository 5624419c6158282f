"""The validity decision and the stop rules: generated timing arrays first, then tiny real runs."""
import re
import time

import h5py
import numpy as np
import pytest

from mpirunner import bench
from mpirunner.checks import Check, ValidityRules, decide_validity
from mpirunner.checks.output_check import judge
from tests.conftest import run_cli

LIMITS = dict(min_iterations=10, max_cv_percent=10.0)


def _clean(ranks=2, steps=60, seed=0, median=0.01, cv=0.03):
    return np.random.default_rng(seed).normal(median, cv * median, (ranks, steps))


def _verdict(steps, checks=(), timed_seconds=2.0, windows=0, **rules):
    """(valid, reasons) of decide_validity with LIMITS, overridden by `rules` (ValidityRules fields).

    The timed window is 2 s unless a test says otherwise: longer than the 1-s minimum for validity."""
    timed = timed_seconds
    validity = decide_validity(steps, ValidityRules(**dict(LIMITS, **rules)), checks, timed_seconds=timed,
                               windows=windows, hosts=["node-a", "node-b", "node-c"])
    return validity.valid, validity.reasons


def test_clean_data_is_valid():
    for seed in range(20):
        valid, reasons = _verdict(_clean(seed=seed))
        assert valid and reasons == [], (seed, reasons)


def test_planted_trend_is_not_warmed_up():
    steps = _clean()
    steps[:, :20] *= 1.3  # the first third 30% slower
    valid, reasons = _verdict(steps)
    assert not valid
    assert any(reason.startswith("not warmed up") for reason in reasons), reasons


def test_one_slow_rank_is_a_straggler_named_by_rank_and_host():
    steps = _clean(ranks=3)
    steps[1] *= 1.4
    valid, reasons = _verdict(steps)
    assert not valid
    stragglers = [reason for reason in reasons if reason.startswith("straggler")]
    assert len(stragglers) == 1 and "rank 1 on node-b" in stragglers[0], reasons


def test_high_spread_is_unstable():
    valid, reasons = _verdict(_clean(cv=0.3))
    assert not valid
    assert any(reason.startswith("unstable") and "--max-cv 10%" in reason for reason in reasons), reasons


def test_too_few_and_too_short_runs_are_invalid():
    steps = _clean(steps=6)
    valid, reasons = _verdict(steps, timed_seconds=0.06, min_duration=3.0)
    assert not valid
    assert any("6 < --min-iterations 10" in reason for reason in reasons), reasons
    assert any("--min-duration 3 s" in reason for reason in reasons), reasons


def test_a_window_under_one_second_is_too_short_without_extra_steps_by_default():
    valid, reasons = _verdict(_clean(), timed_seconds=0.6)
    assert not valid and len(reasons) == 1
    assert reasons[0].startswith("too short: timed 0.6 s < the minimum 1 s")
    assert "--min-duration 1" in reasons[0] and "--iterations" in reasons[0]  # the remedy
    assert _verdict(_clean(), timed_seconds=0.6, min_duration=0.5) == (True, [])  # a user's lower minimum
    assert bench.choose_stop_rule(40, False, 10.0, 10, None) == (None, None)  # default: exactly --iterations


def test_every_timing_reason_names_a_remedy():
    steps = _clean(ranks=3, steps=6, cv=0.3)
    steps[1] *= 3.0  # a straggler beyond the noise of 6 steps of 30% spread (the rule weighs that noise)
    _valid, reasons = _verdict(steps, timed_seconds=0.1, min_duration=3.0)
    assert len(reasons) >= 4 and all("(remedy: " in reason for reason in reasons), reasons


def test_slowing_down_says_how_much_slower_the_last_third_is():
    steps = _clean()
    steps[:, 40:] *= 1.086
    _valid, reasons = _verdict(steps)
    series = np.median(steps, axis=0)
    expected = 100 * (np.median(series[-20:]) / np.median(series[:20]) - 1)  # about 8.6, plus the noise
    slowing = [reason for reason in reasons if reason.startswith("slowing down")]
    assert slowing and slowing[0].startswith(f"slowing down: last third {expected:.1f}% slower than the first")


def test_failed_output_check_is_its_reason_once_and_first():
    torch = pytest.importorskip("torch")
    numbers = {"max_abs_error": 0.5, "rel_error": 0.2, "top1_agreement": 0.5, "top1_agreement_within_ties": 0.5,
               "finite": True}
    check = judge([numbers, dict(numbers, top1_agreement_within_ties=0.95)], samples=8, dtype=torch.float32)
    assert not check.passed and check.attrs["output_check_passed"] is False
    steps = _clean(cv=0.3)  # also unstable: the output check's reason comes first
    valid, reasons = _verdict(steps, [check])
    assert not valid and reasons[0] == "output check failed: top-1 agreement within ties 50.0% < 90%"
    assert sum("output check" in reason for reason in reasons) == 1 and reasons[1].startswith("unstable")
    not_finite = judge([dict(numbers, finite=False)], samples=8, dtype=torch.float32)
    assert _verdict(_clean(), [not_finite]) == (False, ["output check failed: non-finite outputs"])
    assert _verdict(_clean(), [Check("output_check", True)]) == (True, [])


def test_until_stable_verdict_checks_the_kept_windows():
    steps = _clean(ranks=1, steps=30)
    assert _verdict(steps, until_stable=True, window_steps=10, windows=3, max_windows=10)[0]
    steps[0, 20:] *= 1.5  # last window far from the two before it
    valid, reasons = _verdict(steps, until_stable=True, window_steps=10, windows=10, max_windows=10,
                              max_cv_percent=100.0)
    assert not valid and any(reason.startswith("not stable") for reason in reasons), reasons
    valid, reasons = _verdict(steps[:, :20], until_stable=True, window_steps=10, windows=2, max_windows=2,
                              max_cv_percent=100.0)
    assert not valid and any("only 2 window(s)" in reason for reason in reasons), reasons


def test_until_stable_rule_asks_for_windows_until_three_agree_or_the_limit():
    rule = bench.until_stable_rule(window_steps=5, percentage=10.0, max_windows=6)
    steady = [np.full(5, 0.01)] * 3
    drifting = [np.full(5, 0.01), np.full(5, 0.02), np.full(5, 0.01)]
    assert rule(steady[:2], 1.0) == 5
    assert rule(steady, 1.0) == 0
    assert rule(drifting, 1.0) == 5
    assert rule(drifting * 2, 1.0) == 0  # 6 windows: the limit


def test_min_duration_rule_asks_for_the_missing_time():
    rule = bench.min_duration_rule(1.0)
    assert rule([np.full(10, 0.01)], 0.1) >= 90  # 0.9 s more at 10 ms per step
    assert rule([np.full(10, 0.01)], 1.0) == 0


class _CountingSource:
    def next_input(self):
        return None


def _sleeping_step(seconds):
    def step(_input):
        time.sleep(seconds)
        return None, [seconds]
    return step


def test_measure_extends_until_min_duration_and_keeps_every_step():
    timings = bench.measure(_sleeping_step(0.002), _CountingSource(), 3, 0, lambda: None,
                            stop_rule=bench.min_duration_rule(0.1))
    assert timings.step_seconds.size == timings.measured_steps > 3
    assert timings.step_start[-1] + timings.step_seconds[-1] - timings.step_start[0] >= 0.1
    assert timings.batch_latency.size == timings.step_seconds.size


def test_measure_runs_what_the_ranks_decide_together_and_keeps_the_last_windows():
    decisions = []

    def decide(wanted):  # another rank wants two more windows than this one
        decisions.append(wanted)
        return 4 if len(decisions) <= 2 else 0

    timings = bench.measure(_sleeping_step(0.0005), _CountingSource(), 4, 1, lambda: None,
                            stop_rule=lambda windows, elapsed: 0, decide=decide, keep_last_windows=2)
    assert decisions == [0, 0, 0]
    assert timings.windows == 3 and timings.kept_windows == 2
    assert timings.measured_steps == 12 and timings.step_seconds.size == 8
    assert np.all(np.diff(timings.step_start) > 0) and timings.step_start[0] > 0.001  # the last two windows


def test_min_duration_sizes_the_first_window_from_the_warm_up_before_the_barrier():
    assert bench.first_window_steps(20, 3.0, [0.1, 0.1, 0.5]) == 32  # 3 s + 5% at the median pace of 100 ms
    assert bench.first_window_steps(20, 1.0, [0.1] * 3) == 20  # --iterations already fill it
    assert bench.first_window_steps(20, 3.0, []) == 20  # no warm-up: the stop rule extends instead
    calls = []

    def decide(wanted):
        calls.append(("decide", wanted))
        time.sleep(0.2)  # waiting for a slower rank
        return wanted + 1 if len(calls) == 1 else wanted  # another rank first asks for one step more

    timings = bench.measure(_sleeping_step(0.002), _CountingSource(), 3, 4, lambda: calls.append(("barrier",)),
                            stop_rule=bench.min_duration_rule(0.1), decide=decide, min_duration=0.1)
    assert calls[0][0] == "decide" and calls[0][1] > 3  # sized from the warm-up, agreed before the timed window
    assert calls[1:3] == [("barrier",), ("barrier",)]
    first_window = calls[0][1] + 1
    assert timings.measured_steps >= first_window
    gaps = np.diff(timings.step_start) - timings.step_seconds[:-1]
    assert gaps[:first_window - 1].max() < 0.1  # the 200 ms agreement is not inside the first window


def test_measure_records_the_second_barrier_wait():
    calls = []

    def barrier():
        calls.append(time.perf_counter())
        if len(calls) == 2:
            time.sleep(0.01)  # as if another rank left the first barrier 10 ms later

    timings = bench.measure(_sleeping_step(0.0), _CountingSource(), 2, 0, barrier)
    assert len(calls) == 2 and timings.barrier_wait_seconds >= 0.01


# --- real runs (resnet18 at 32 px) ---------------------------------------------------------------

def test_min_duration_extends_a_run_on_every_rank_alike(tmp_path, tiny_args):
    output = tmp_path / "long.h5"
    result = run_cli([*tiny_args, "--batch-size", "1", "--iterations", "3", "--min-duration", "3",
                      "--output", output], ranks=2)
    assert result.returncode == 0, result.stderr
    with h5py.File(output) as h5:
        run = h5["runs/bs00001"]
        steps = run["step_seconds"][()]
        assert steps.shape[1] > 3 and not np.isnan(steps).any()  # both ranks ran the same extended count
        assert run.attrs["iterations"] == steps.shape[1]
        assert run.attrs["timed_seconds"] >= 3.0
        assert run["barrier_wait_seconds"].shape == (2,)
        waits = run["barrier_wait_seconds"][()]
        assert run.attrs["barrier_skew_seconds"] == pytest.approx(waits.max() - waits.min())
    assert re.search(r"95% CI: throughput [\d.]+ (± [\d.]+|\[[\d.]+, [\d.]+\]) samples/sec", result.stdout)


def test_until_stable_stops_early_and_records_its_windows(tmp_path, tiny_args):
    output = tmp_path / "stable.h5"
    result = run_cli([*tiny_args, "--batch-size", "1", "--iterations", "5", "--until-stable",
                      "--stability-percentage", "50", "--max-windows", "12", "--output", output])
    assert result.returncode == 0, result.stderr
    with h5py.File(output) as h5:
        run = h5["runs/bs00001"]
        assert 3 <= run.attrs["windows"] < 12
        assert run.attrs["windows_kept"] == 3
        assert run["step_seconds"].shape == (1, 15) and run.attrs["iterations"] == 15
        assert run.attrs["measured_steps"] == 5 * run.attrs["windows"]
        windows = int(run.attrs["windows"])
    assert f"{windows} windows" in result.stdout


def test_strict_makes_an_invalid_run_exit_3_after_writing_the_file(tmp_path, tiny_args):
    arguments = [*tiny_args, "--batch-size", "1", "--iterations", "3", "--min-iterations", "10"]
    relaxed = run_cli([*arguments, "--output", tmp_path / "relaxed.h5"])
    assert relaxed.returncode == 0, relaxed.stderr
    assert "INVALID: too few timed steps: 3 < --min-iterations 10" in relaxed.stdout

    output = tmp_path / "strict.h5"
    strict = run_cli([*arguments, "--strict", "--output", output])
    assert strict.returncode == 3, strict.stderr
    assert "--strict" in strict.stderr and "bs00001" in strict.stderr
    with h5py.File(output) as h5:
        run = h5["runs/bs00001"]
        assert not run.attrs["valid"]
        assert any("--min-iterations 10" in str(reason) for reason in run.attrs["validity_reason"])
        assert "barrier_skew_seconds" in run.attrs
        # 3 steps: too few for any interval; they are left out and the reason stored (never NaN)
        assert not [key for key in run.attrs if "ci95" in key]
        assert "throughput: fewer than 5 timed steps" in run.attrs["ci_unavailable"]


def test_unstable_names_the_rank_with_the_largest_cv_as_the_table_shows_it():
    steps = _clean(ranks=3, cv=0.12)
    steps[2] = _clean(ranks=1, cv=0.25, seed=5)[0]
    _valid, reasons = _verdict(steps)
    worst = max(100 * row.std(ddof=1) / row.mean() for row in steps)
    assert any(reason.startswith(f"unstable: step-time cv {worst:.1f}% on rank 2 on node-c") for reason in reasons)
