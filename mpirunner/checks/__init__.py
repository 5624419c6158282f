"""Validity: one decision from a run's timings, the user's rules and the checks of its outputs (nothing here
prints)."""
from dataclasses import dataclass, field
from typing import List

from mpirunner.checks.check import Check, failed
from mpirunner.checks.rules import ValidityRules, input_path_checks, timing_checks

__all__ = ["Check", "Validity", "ValidityRules", "decide_validity", "failed_run_validity"]


@dataclass(frozen=True)
class Validity:
    """The verdict: valid when no check failed; reasons lists the failed checks' reasons in order."""

    valid: bool
    reasons: List[str]
    checks: List[Check] = field(default_factory=list)


def decide_validity(step_seconds, rules, checks=(), *, timed_seconds, windows=0, hosts=None, host_gap=None,
                    device_busy=None, scenario_checks=None, warmup_seconds=None):
    """Whether a run can be trusted, with every reason a line a user can act on: the failed `checks` handed in
    (the output check), then the timing rules and the input path (device_busy None where batch latency is not
    device time), or instead of those two a scenario's checks (docs/scenarios.md); warmup_seconds [ranks, warm-up
    steps] name a slow start's cause."""
    if scenario_checks is not None:
        every = [*checks, *scenario_checks]
    else:
        every = [*checks, *timing_checks(step_seconds, rules, timed_seconds=timed_seconds, windows=windows,
                                         hosts=hosts, warmup_seconds=warmup_seconds),
                 *input_path_checks(host_gap, device_busy, hosts)]
    reasons = [check.reason for check in every if not check.passed]
    return Validity(not reasons, reasons, every)


def failed_run_validity(failure_reason):
    """The verdict of a run that could not be measured (e.g. out of memory on some rank): invalid, for that reason."""
    return Validity(False, [failure_reason], [failed("measured", failure_reason)])
