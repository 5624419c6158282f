"""Repeatable verdicts: a rerun reads "same", a real slowdown "regressed", different configurations are never judged.

Files are written with tests/summary_files.py (no torch): each holds lognormal step times (5% within a run);
`slowdown` plays the run-to-run offset a rerun gets on a shared host.
"""
import json
import math

import numpy as np
import pytest

from mpirunner.report.variation import UNKNOWN, configuration_key, key_differences
from mpirunner.report.variation import NOISE_FLOOR_PERCENT, between_runs, t_quantile_95
from tests.summary_files import SETTINGS, write_result_file
from tests.test_report import run_report


def _files(folder, name, offsets, first_seed, settings=SETTINGS):
    """One file per offset (a rerun each), seeds first_seed, first_seed + 1, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    return [str(write_result_file(folder / f"{name}{index}.h5", slowdown=offset, seed=first_seed + index,
                                  settings=settings)) for index, offset in enumerate(offsets)]


def _offsets(count, seed, spread=0.02):
    """Run-to-run offsets as reruns show them: a few percent around 1."""
    return list(1.0 + spread * np.random.default_rng(seed).standard_normal(count))


def _verdict_line(out, batch_size=8):
    return next(line for line in out.splitlines() if line.split()[:1] == [str(batch_size)])


# ------------------------------------------------------------------------------ one file per side

def test_a_rerun_seven_percent_slower_reads_same_below_the_noise_floor(tmp_path, capsys):
    offset = min(1.07, 1 + 0.7 * NOISE_FLOOR_PERCENT / 100)  # 7% while the default floor is 10% or more
    base = write_result_file(tmp_path / "base.h5", seed=1, settings=SETTINGS)
    rerun = write_result_file(tmp_path / "rerun.h5", seed=2, slowdown=offset, settings=SETTINGS)
    status, out, _ = run_report(capsys, "compare", base, rerun)
    assert status == 0, out
    line = _verdict_line(out)
    assert line.endswith(f"same (below the {NOISE_FLOOR_PERCENT:g}% noise floor)"), line
    low, high = (float(part) for part in line.split("[")[1].split("]")[0].split(","))
    assert low > 1.0  # the steps' own interval alone would have called it a regression
    status, out, _ = run_report(capsys, "compare", base, rerun, "--noise-floor", "2", "--threshold", "2")
    assert status == 1 and _verdict_line(out).endswith("REGRESSED (beyond the 2% noise floor)")


def test_older_files_without_settings_still_compare_and_unknown_is_no_difference(tmp_path, capsys):
    old = write_result_file(tmp_path / "old.h5", seed=1)  # no stored settings: compile etc. unknown
    new = write_result_file(tmp_path / "new.h5", seed=2, slowdown=1.3, settings={**SETTINGS, "compile": "inductor"})
    status, out, _ = run_report(capsys, "compare", old, new)
    assert status == 1, out
    assert f"REGRESSED (beyond the {NOISE_FLOOR_PERCENT:g}% noise floor)" in _verdict_line(out)
    old_key = configuration_key({"world_size": 1}, {"model": "resnet18"})
    assert old_key["compile"] == UNKNOWN and old_key["model"] == "resnet18"
    assert key_differences([old_key], [configuration_key({"config": "compile: inductor\n"}, {})]) == []


# ------------------------------------------------------------------------------ groups of reruns

def test_three_reruns_against_three_others_read_same(tmp_path, capsys):
    base = _files(tmp_path, "a", [1.00, 1.04, 0.97], 10)
    new = _files(tmp_path, "b", [1.03, 0.98, 1.05], 20)
    status, out, _ = run_report(capsys, "compare", "--base", *base, "--new", *new)
    assert status == 0, out
    assert "same (within run-to-run noise of 3+3 runs: ±" in _verdict_line(out)
    assert out.splitlines()[0].startswith("base (3 runs): ") and out.splitlines()[-1] == "no regression"


def test_six_reruns_ten_percent_slower_read_regressed(tmp_path, capsys):
    offsets = _offsets(12, seed=3)
    base = _files(tmp_path, "a", offsets[:6], 30)
    new = _files(tmp_path, "b", [1.10 * offset for offset in offsets[6:]], 40)
    status, out, _ = run_report(capsys, "compare", "--base", *base, "--new", *new)
    assert status == 1, out
    line = _verdict_line(out)
    assert "REGRESSED (beyond run-to-run noise of 6+6 runs: ±" in line
    ratio = float(line.split()[6])
    assert 1.05 < ratio < 1.15
    status, out, _ = run_report(capsys, "compare", "--base", *new, "--new", *base)
    assert status == 0 and "improved (beyond run-to-run noise of 6+6 runs" in _verdict_line(out)


def test_ten_percent_slower_within_a_large_spread_reads_same(tmp_path, capsys):
    base = _files(tmp_path, "a", [0.85, 1.00, 1.18], 50)
    new = _files(tmp_path, "b", [1.10 * offset for offset in (1.18, 0.85, 1.00)], 60)
    status, out, _ = run_report(capsys, "compare", "--base", *base, "--new", *new)
    assert status == 0, out
    line = _verdict_line(out)
    assert "same (within run-to-run noise of 3+3 runs: ±" in line
    assert float(line.split("±")[1].split("%")[0]) > 10.0


def test_a_single_file_side_borrows_the_spread_of_the_other():
    base, new = [1.0, 1.02, 0.98, 1.01], [1.05]
    spread = between_runs(base, new)
    logs = np.log(base)
    half = t_quantile_95(len(base) - 1) * logs.std(ddof=1) * math.sqrt(1 + 1 / len(base))  # prediction interval
    assert spread.low == pytest.approx(math.exp(math.log(1.05) - logs.mean() - half))
    assert spread.high == pytest.approx(math.exp(math.log(1.05) - logs.mean() + half))
    assert not between_runs([1.0], [1.05]).measured  # one run per side: no spread, the noise floor decides


@pytest.mark.parametrize("df, expected", [(1, 12.706), (4, 2.776), (10, 2.228), (30, 2.042), (1e9, 1.960)])
def test_t_quantiles(df, expected):
    assert t_quantile_95(df) == pytest.approx(expected, abs=1e-3)
    assert t_quantile_95(4.5) < t_quantile_95(4) and t_quantile_95(4.5) > t_quantile_95(5)


# ------------------------------------------------------------------------------ configuration key

def test_a_different_compile_mode_exits_7_and_names_the_key(tmp_path, capsys):
    eager = write_result_file(tmp_path / "eager.h5", seed=1, settings=SETTINGS)
    inductor = write_result_file(tmp_path / "inductor.h5", seed=2, slowdown=0.55,
                                 settings={**SETTINGS, "compile": "inductor"})
    status, out, _ = run_report(capsys, "compare", eager, inductor)
    assert status == 7, out
    assert "configuration differs: compile: none (base) vs inductor (new)" in out
    assert "DIFFERENT CONFIGURATION" in _verdict_line(out) and "improved" not in out
    base = _files(tmp_path / "group", "a", [1.0, 1.01], 5)
    status, out, _ = run_report(capsys, "compare", "--base", *base, "--new", base[0], str(inductor))
    assert status == 7 and "compile: none (base) vs none/inductor (new)" in out


def test_settings_that_change_only_how_long_a_run_lasts_are_not_in_the_key():
    root = {"config": "iterations: 30\nmin_duration: null\nseed: 0\noutput: a.h5\ncompile: none\n",
            "world_size": 1, "argv": "python -m mpirunner"}
    longer = {"config": "iterations: 300\nmin_duration: 10.0\nseed: 5\noutput: b.h5\ncompile: none\n",
              "world_size": 1, "argv": "MPIRUNNER_FAULT=sleep python -m mpirunner --iterations 300"}
    assert configuration_key(root, {"batch_size": 8}) == configuration_key(longer, {"batch_size": 8})
    assert configuration_key(root, {"batch_size": 8}) != configuration_key(root, {"batch_size": 16})


def test_the_test_only_fault_does_not_change_the_key(tmp_path, capsys):
    from mpirunner.runfile.plain import read_results as load
    from tests.conftest import TINY, run_cli

    paths = [tmp_path / "plain.h5", tmp_path / "fault.h5"]
    for path, env in zip(paths, ({}, {"MPIRUNNER_FAULT": "sleep:seconds=0.005"})):
        done = run_cli([*TINY, "--batch-size", "2", "--iterations", "3", "--output", path], env=env)
        assert done.returncode in (0, 3), done.stderr
    keys = []
    for path in paths:
        data = load(path)
        (run,) = data["runs"].values()
        keys.append(configuration_key(data["attrs"], run["attrs"]))
    assert keys[0] == keys[1] and keys[0]["compile"] == "none" and keys[0]["model"] == "resnet18"
    status, out, _ = run_report(capsys, "compare", *paths)
    assert status != 7 and "configuration differs" not in out


# ------------------------------------------------------------------------------ trends and the gate

def _trend_rows(out):
    return {row["file"].rsplit("/", 1)[-1]: row for row in json.loads(out)}


def test_trends_never_pair_runs_whose_key_differs(tmp_path, capsys):
    inductor = {**SETTINGS, "compile": "inductor"}
    server = {**SETTINGS, "scenario": "server", "target_qps": 50.0}
    plan = [("eager0", SETTINGS, 1.0, None), ("inductor0", inductor, 0.55, None), ("eager1", SETTINGS, 1.01, None),
            ("server0", server, 1.0, {"scenario": "server", "target_qps": 50.0}), ("inductor1", inductor, 0.56, None),
            ("eager2", SETTINGS, 0.99, None), ("inductor2", inductor, 0.55, None)]
    for index, (name, settings, offset, run_attrs) in enumerate(plan):
        write_result_file(tmp_path / f"{name}.h5", slowdown=offset, seed=index, settings=settings, run_attrs=run_attrs,
                          created=f"2026-11-29T12:{index:02d}:00+00:00")
    status, out, _ = run_report(capsys, "summary", tmp_path, "--by", "created", "--json", "-")
    assert status == 0
    rows = _trend_rows(out)
    for name, row in rows.items():
        if row["trend_base"]:
            base = row["trend_base"].rsplit("/", 1)[-1].split(".h5")[0]
            assert base.rstrip("0123456789") == name.rstrip("0123456789.h5"), (name, base)
    assert [rows[f"eager{i}.h5"]["trend"] for i in range(3)] == ["first", "same", "same"]
    assert [rows[f"inductor{i}.h5"]["trend"] for i in range(3)] == ["first", "same", "same"]
    assert rows["server0.h5"]["trend"] == "first"
    status, out, _ = run_report(capsys, "summary", tmp_path, "--by", "created")
    assert "(compile inductor" in out and "REGRESSED" not in out and "improved" not in out


def test_fail_on_regression_over_six_normal_runs_then_a_25_percent_slower_seventh(tmp_path, capsys):
    for index, offset in enumerate(_offsets(6, seed=7)):
        write_result_file(tmp_path / f"run{index}.h5", slowdown=offset, seed=100 + index, settings=SETTINGS,
                          created=f"2026-11-29T12:{index:02d}:00+00:00")
    status, out, err = run_report(capsys, "summary", tmp_path, "--by", "created", "--fail-on-regression")
    assert status == 0, out + err
    assert "within run-to-run noise of 5 earlier runs" in out or "within the 5% threshold" in out
    write_result_file(tmp_path / "run6.h5", slowdown=1.25, seed=106, settings=SETTINGS,
                      created="2026-11-29T12:06:00+00:00")
    status, out, err = run_report(capsys, "summary", tmp_path, "--by", "created", "--fail-on-regression")
    assert status == 1, out + err
    assert "regressed" in err and "run6.h5" in err and "beyond run-to-run noise of 6 earlier runs" in err
    status, out, _ = run_report(capsys, "summary", tmp_path, "--by", "created", "--json", "-")
    row = _trend_rows(out)["run6.h5"]
    assert row["trend_earlier_runs"] == 6 and row["trend_decided_by_noise"] == "between-run spread"
    assert row["trend_between_run_percent"] > 0 and 1.15 < row["trend_ratio"] < 1.35


def test_an_invalid_file_of_a_base_group_is_left_out_and_the_rest_judged(tmp_path, capsys):
    base = _files(tmp_path, "a", [1.00, 1.02, 0.99], 70)
    broken = str(write_result_file(tmp_path / "broken.h5", seed=80, slowdown=2.0, settings=SETTINGS,
                                   invalid_reasons=("unstable: step-time cv 40% > --max-cv 10%",)))
    new = _files(tmp_path, "b", [1.01, 0.98, 1.02], 90)
    status, out, _ = run_report(capsys, "compare", "--base", *base, broken, "--new", *new)
    assert status == 0, out
    assert "1 INVALID base run(s) left out" in out and "same (within run-to-run noise of 3+3 runs" in out
    status, out, _ = run_report(capsys, "compare", "--base", *base, "--new", broken)
    assert status == 6 and "INVALID (new)" in out  # one new run, INVALID: nothing to judge


def test_a_group_of_new_reruns_leaves_out_a_minority_of_invalid_ones_but_not_a_majority(tmp_path, capsys):
    base = _files(tmp_path, "a", _offsets(6, seed=5), 110)
    new = _files(tmp_path, "b", [1.10 * offset for offset in _offsets(6, seed=6)], 120)
    broken = [str(write_result_file(tmp_path / f"broken{index}.h5", seed=130 + index, slowdown=1.1,
                                    settings=SETTINGS, invalid_reasons=("not warmed up: first third 7% slower",)))
              for index in range(6)]
    status, out, _ = run_report(capsys, "compare", "--base", *base, "--new", *new[:4], *broken[:2])
    assert status == 1, out  # 4 of 6 VALID: the 2 INVALID reruns are left out, the 10% regression is seen
    assert "2 INVALID new run(s) left out" in out and "REGRESSED (beyond run-to-run noise of 6+4 runs" in out
    status, out, _ = run_report(capsys, "compare", "--base", *base, "--new", *new[:3], *broken[:3])
    assert status == 6 and "INVALID (new)" in out  # half INVALID: the group is not judged


def test_the_two_forms_do_not_mix(tmp_path, capsys):
    one, two = _files(tmp_path, "a", [1.0, 1.0], 1)
    for argv in ((one,), (one, two, "--base", one), ("--base", one), (one, two, one)):
        status, _, err = run_report(capsys, "compare", *argv)
        assert status == 2 and "compare takes" in err, argv


def test_compare_json_carries_the_verdict_and_what_decided_it(tmp_path, capsys):
    base = _files(tmp_path, "a", [1.00, 1.01, 0.99], 110)
    new = _files(tmp_path, "b", [1.20, 1.21, 1.19], 120)
    status, out, _ = run_report(capsys, "compare", "--base", *base, "--new", *new, "--json", "-")
    assert status == 1
    (row,) = json.loads(out)  # stdout holds the JSON alone
    assert row["regression_verdict"] == "regressed" and row["decided_by_noise"] == "between-run spread"
    assert (row["base_files"], row["new_files"]) == (3, 3) and 1.15 < row["ratio"] < 1.25
    assert row["between_ci95_low"] > 1.0 and row["reason"].startswith("beyond run-to-run noise of 3+3 runs")
    inductor = str(write_result_file(tmp_path / "inductor.h5", seed=3, settings={**SETTINGS, "compile": "inductor"}))
    status, out, _ = run_report(capsys, "compare", base[0], inductor, "--json", "-")
    assert status == 7 and json.loads(out)[0]["differences"] == "compile: none vs inductor"
