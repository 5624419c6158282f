"""The server scenario's checks: kept up with the offered load, served every query within the drain
bound, held the latency bound (scenarios.scenario_reasons, each reason with its remedy)."""
from mpirunner.checks.check import failed, passed


def scenario_checks(summary, drain_seconds=None):
    from mpirunner.scenarios import scenario_reasons

    reasons = scenario_reasons(summary, drain_seconds=drain_seconds)
    return [failed("scenario", reason) for reason in reasons] or [passed("scenario")]
