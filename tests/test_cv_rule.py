"""The --max-cv rule (checks/rules.stable_steps) against stats.max_rank_cv, the `max cv %` tables show.

They agree on ordinary step times, but the rule keeps its own formula: on the edge inputs below the two
give different verdicts, so replacing one by the other would change which runs are INVALID."""
import numpy as np
import pytest

from mpirunner.checks.rules import ValidityRules, stable_steps
from mpirunner.stats import max_rank_cv


def _rule_passes(steps, max_cv_percent):
    return stable_steps(np.atleast_2d(np.asarray(steps, dtype=np.float64)),
                        ValidityRules(max_cv_percent=max_cv_percent), None).passed


def test_rule_and_table_agree_on_ordinary_steps():
    steps = np.random.default_rng(1).lognormal(np.log(0.01), 0.05, (3, 40))
    steps[1, 30:] = np.nan  # a rank that timed fewer steps
    percent = 100 * max_rank_cv(steps)
    assert _rule_passes(steps, percent * 1.0001) and not _rule_passes(steps, percent * 0.9999)
    reason = stable_steps(steps, ValidityRules(max_cv_percent=percent * 0.9999), ["a", "b", "c"]).reason
    assert f"step-time cv {percent:.1f}% on rank " in reason


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("steps, max_cv_percent, rule_passes", [
    ([[0.005, 0.02, 0.035]], 75.0, False),   # rule: 100 * std / mean = 75.00000000000001; table: 100 * (std / mean) = 75.0
    ([[0.01, np.inf, 0.02]], 10.0, True),    # rule: an infinite step makes the rank's cv NaN, not judged; table drops it
])
def test_rule_and_table_differ_at_the_edges(steps, max_cv_percent, rule_passes):
    table_passes = not 100 * max_rank_cv(steps) > max_cv_percent
    assert _rule_passes(steps, max_cv_percent) is rule_passes and table_passes is not rule_passes
