"""One cv formula: the --max-cv rule (checks/rules.stable_steps) and the `max cv %` column
(stats.max_rank_cv, stored as step_cv_rank_max) both use stats.rank_cv_percents, the rule's formula.

Before they were one function, the column took 100 * (std / mean), dropped infinite steps and scored a
non-positive mean, while the rule took 100 * std / mean and judged neither; the edge cases below gave a
verdict the column contradicted. They keep the rule's verdict, and the column now says the same."""
import numpy as np
import pytest

from mpirunner.checks.rules import ValidityRules, stable_steps
from mpirunner.stats import max_rank_cv, rank_cv_percents, summarize


def _steps(steps):
    return np.atleast_2d(np.asarray(steps, dtype=np.float64))


def _rule_passes(steps, max_cv_percent):
    return stable_steps(_steps(steps), ValidityRules(max_cv_percent=max_cv_percent), None).passed


def _table_passes(steps, max_cv_percent):
    return not 100 * max_rank_cv(steps) > max_cv_percent


def test_rule_and_table_agree_on_ordinary_steps():
    steps = np.random.default_rng(1).lognormal(np.log(0.01), 0.05, (3, 40))
    steps[1, 30:] = np.nan  # a rank that timed fewer steps
    percent = 100 * max_rank_cv(steps)
    assert _rule_passes(steps, percent) and _table_passes(steps, percent)
    assert not _rule_passes(steps, percent * 0.9999) and not _table_passes(steps, percent * 0.9999)
    reason = stable_steps(steps, ValidityRules(max_cv_percent=percent * 0.9999), ["a", "b", "c"]).reason
    assert f"step-time cv {percent:.1f}% on rank " in reason


@pytest.mark.parametrize("steps, max_cv_percent, rule_passes, column_percent, old_column_percent", [
    # 100 * std / mean = 75.00000000000001 (the rule's), where 100 * (std / mean) gave 75.0: INVALID at 75
    ([[0.005, 0.02, 0.035]], 75.0, False, 75.00000000000001, 75.0),
    # an infinite step: the rank is not judged; the column no longer shows the cv of its finite steps
    ([[0.01, np.inf, 0.02]], 10.0, True, 0.0, 47.14045207910317),
    # a mean not above 0 is not judged; the column showed a negative cv
    ([[-0.03, 0.01, 0.01]], 10.0, True, 0.0, -692.820323027551),
])
def test_the_old_edge_cases_keep_the_rule_s_verdict_and_the_column_agrees(steps, max_cv_percent, rule_passes,
                                                                           column_percent, old_column_percent):
    assert _rule_passes(steps, max_cv_percent) is rule_passes
    assert _table_passes(steps, max_cv_percent) is rule_passes
    assert 100 * max_rank_cv(steps) == column_percent != old_column_percent


def test_the_worst_rank_is_the_first_largest_and_unjudged_ranks_are_nan():
    steps = _steps([[0.01, 0.02], [0.01, np.nan], [0.02, 0.01], [0.01, 0.03]])
    percents = rank_cv_percents(steps)
    assert np.isnan(percents[1]) and percents[0] == percents[2] < percents[3]
    reason = stable_steps(steps, ValidityRules(max_cv_percent=1.0), ["a", "b", "c", "d"]).reason
    assert "on rank 3 on d" in reason
    assert summarize(np.cumsum(steps, axis=1) - steps, steps, steps, 1)["step_cv_rank_max"] == percents[3] / 100
