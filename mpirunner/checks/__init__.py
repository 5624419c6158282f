"""Validity: one decision from a run's timings, the user's rules and the checks of its outputs.

Where a run is judged: decide_validity below. Its reasons are, in order, the failed checks handed in
(output check, ...), then for an offline run the timing rules (rules.py) and the input path
(input_path.py), for a single-stream or server run the scenario rules (scenario.py) instead. Nothing
here prints; the runner's console and report/text.py show the result.
"""
from dataclasses import dataclass, field
from typing import List

from mpirunner.checks.check import Check, failed
from mpirunner.checks.input_path import input_path_checks
from mpirunner.checks.rules import ValidityRules, timing_checks

__all__ = ["Check", "Validity", "ValidityRules", "decide_validity", "failed_run_validity"]


@dataclass(frozen=True)
class Validity:
    """The verdict: valid when no check failed; reasons lists the failed checks' reasons in order."""

    valid: bool
    reasons: List[str]
    checks: List[Check] = field(default_factory=list)


def decide_validity(step_seconds, rules, checks=(), *, timed_seconds, windows=0, hosts=None, host_gap=None,
                    device_busy=None, scenario_checks=None):
    """Whether a run can be trusted, with every reason a line a user can act on.

    step_seconds: [ranks, steps] (NaN-padded); rules: ValidityRules; checks: Checks made by the run
    (the output check); host_gap / device_busy: per-rank shares (stats.input_shares), device_busy
    None where batch latency is not device time. scenario_checks (single-stream and server runs,
    checks/scenario.py) replace the timing rules and the input path: a scenario is judged on its queries
    (enough of them, all served, kept up, the percentile within its bound), as LoadGen judges it. A
    server's steps follow its arrivals (their sizes differ, the device waits between them by design); a
    single-stream run's latency is its result, drift included, not a reason to discard it.
    """
    if scenario_checks is not None:
        every = [*checks, *scenario_checks]
    else:
        every = [*checks, *timing_checks(step_seconds, rules, timed_seconds=timed_seconds, windows=windows,
                                         hosts=hosts), *input_path_checks(host_gap, device_busy, hosts)]
    reasons = [check.reason for check in every if not check.passed]
    return Validity(not reasons, reasons, every)


def failed_run_validity(failure_reason):
    """The verdict of a run that could not be measured (status 'failed', e.g. out of memory on some rank):
    invalid, for the reason it failed."""
    return Validity(False, [failure_reason], [failed("measured", failure_reason)])
