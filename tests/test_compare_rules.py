"""compare's rule (report/compare.compare_runs) on synthetic rows: validity, world size, stragglers."""
import numpy as np
import pytest

from mpirunner.report.compare import PER_RANK, WHOLE_JOB, compare_runs
from mpirunner.report.rows import RunRow
from mpirunner.report.variation import NOISE_FLOOR_PERCENT


def make_row(step_seconds, samples_per_step=8, valid=True, reason=""):
    """A row as summary_row builds it: the cells compare reads and the per-step arrays."""
    steps = np.atleast_2d(np.asarray(step_seconds, dtype=np.float64))
    row = RunRow(world_size=steps.shape[0], samples_per_step=samples_per_step, valid=valid,
                 validity_reason=reason)
    row.arrays = {"step_seconds": steps}
    return row


def noisy(median, ranks=1, steps=60, seed=0):
    rng = np.random.default_rng(seed)
    return median * (1 + 0.01 * rng.standard_normal((ranks, steps)))


def test_twice_as_many_ranks_twice_as_fast_is_an_improvement_on_whole_job_throughput():
    # 2 ranks each as fast per step as the 1 rank: per-rank time is the same, the job is 2x faster
    result = compare_runs(make_row(noisy(0.010, 1)), make_row(noisy(0.010, 2, seed=1)), 5.0)
    assert result.decided_by == WHOLE_JOB
    assert result.status == "improved"
    assert 1.9 < result.ratio < 2.1 and result.low > 1.0
    assert "world size differs" in result.note


def test_fewer_ranks_is_a_regression_on_whole_job_throughput():
    result = compare_runs(make_row(noisy(0.010, 2)), make_row(noisy(0.010, 1, seed=1)), 5.0)
    assert (result.decided_by, result.status) == (WHOLE_JOB, "regressed")
    assert result.high < 1.0


def test_same_world_size_is_decided_per_rank():
    result = compare_runs(make_row(noisy(0.010, 2)), make_row(noisy(0.0101, 2, seed=1)), 5.0)
    assert (result.decided_by, result.status) == (PER_RANK, "same")
    assert result.low < result.ratio < result.high


def test_one_rank_twenty_percent_slower_is_flagged_though_the_pooled_median_hides_it():
    new = noisy(0.010, 4, seed=1)
    new[2] *= 1.2
    result = compare_runs(make_row(noisy(0.010, 4)), make_row(new), 5.0)
    assert result.status == "regressed"
    assert result.rank == 2 and 1.15 < result.ratio < 1.25


def test_a_rank_already_slow_in_base_is_no_regression():
    base, new = noisy(0.010, 2), noisy(0.010, 2, seed=1)
    base[1] *= 1.2
    new[1] *= 1.2
    assert compare_runs(make_row(base), make_row(new), 5.0).status == "same"


@pytest.mark.parametrize("base_valid, new_valid, status", [(True, False, "invalid-new"),
                                                            (False, True, "excluded-invalid"),
                                                            (False, False, "invalid-new")])
def test_invalid_runs_are_left_out_of_the_verdict(base_valid, new_valid, status):
    base = make_row(noisy(0.010), valid=base_valid, reason="straggler: rank 1")
    new = make_row(noisy(0.005, seed=1), valid=new_valid, reason="straggler: rank 1")
    result = compare_runs(base, new, 5.0)
    assert result.status == status
    assert "INVALID" in result.note and "straggler" in result.note


def test_include_invalid_compares_them_and_says_so():
    result = compare_runs(make_row(noisy(0.010)), make_row(noisy(0.005, seed=1), valid=False, reason="too short"),
                          5.0, include_invalid=True)
    assert result.status == "improved"
    assert "--include-invalid" in result.note


def test_rows_without_timings_are_not_judged():
    empty = RunRow(world_size=1, samples_per_step=8, valid=True)
    assert compare_runs(empty, make_row(noisy(0.01)), 5.0).status == "no-timings"


# ------------------------------------------------------------------ the command on written files

def test_compare_one_rank_against_two_ranks_twice_as_fast(tmp_path, capsys):
    from tests.test_report import make_file, run_report

    one = make_file(tmp_path / "one.h5", batch_sizes=(4,), ranks=1, seed=1)
    two = make_file(tmp_path / "two.h5", batch_sizes=(4,), ranks=2, seed=2)
    status, out, _ = run_report(capsys, "compare", one, two)
    assert status == 0, out
    row = next(line for line in out.splitlines() if line.split()[:1] == ["4"])
    assert "whole-job throughput" in row and row.endswith(f"improved (beyond the {NOISE_FLOOR_PERCENT:g}% noise floor)")
    assert "decided on whole-job throughput" in out and out.splitlines()[-1] == "no regression"
    status, out, _ = run_report(capsys, "compare", two, one)
    assert status == 1 and "REGRESSED" in out


def test_compare_with_an_invalid_new_run_exits_6_unless_included(tmp_path, capsys):
    from tests.test_report import make_file, run_report

    base = make_file(tmp_path / "base.h5", batch_sizes=(4,), seed=1)
    new = make_file(tmp_path / "new.h5", batch_sizes=(4,), seed=1, slow_rank=1,
                    run_extra={"valid": False, "validity_reason": "straggler: rank 1 on node0"})
    status, out, _ = run_report(capsys, "compare", base, new)
    assert status == 6, out
    assert "INVALID (new)" in out and "straggler: rank 1" in out and "no regression" not in out
    status, out, _ = run_report(capsys, "compare", base, new, "--include-invalid")
    assert status == 1 and "REGRESSED" in out  # the straggler, judged: rank 1 is 1.5x slower
    status, out, _ = run_report(capsys, "compare", new, base)  # only BASE invalid: every pair excluded
    assert status == 6 and "every pair excluded" in out


def test_compare_flags_a_planted_one_rank_slowdown(tmp_path, capsys):
    import h5py

    from tests.test_report import make_file, run_report

    base = make_file(tmp_path / "base.h5", batch_sizes=(4,), ranks=4, steps=60, seed=1)
    new = make_file(tmp_path / "new.h5", batch_sizes=(4,), ranks=4, steps=60, seed=2)
    with h5py.File(new, "r+") as h5:
        h5["runs/bs00004/step_seconds"][3] = h5["runs/bs00004/step_seconds"][3] * 1.2
    status, out, _ = run_report(capsys, "compare", base, new)
    assert status == 1, out
    assert "rank 3 (worst new/base ratio) decided" in out and "per-rank time per sample" in out


@pytest.mark.parametrize("size", [1, 2, 7, 40, 1200])
def test_bootstrap_medians_from_counts_equal_np_median_of_the_same_draws(size):
    """compare reads each resample's median from draw counts; it must be np.median of values[picks], draw for draw."""
    from mpirunner.report.compare import CHUNK_ELEMENTS, resampled_medians

    values = np.random.default_rng(size).integers(0, 5, size).astype(float) * 1e-3  # many ties
    resamples = 3000 if size < 1000 else 2000  # 1200 x 2000 spans two blocks of draws
    expected, rng, done = [], np.random.default_rng(7), 0
    rows_per_block = max(1, CHUNK_ELEMENTS // size)
    while done < resamples:
        count = min(rows_per_block, resamples - done)
        expected.append(np.median(values[rng.integers(0, size, size=(count, size))], axis=1))
        done += count
    np.testing.assert_array_equal(resampled_medians(values, np.random.default_rng(7), resamples),
                                  np.concatenate(expected))
