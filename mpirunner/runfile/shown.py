"""What a run is shown by, wherever it is shown (the runner's block and sweep table, mpirunner-report's text, CSV
and JSON, the summary and its page): one meaning per column and one rule for percentiles (docs/reports.md: "One
rule for percentiles", "Single-stream and server runs"). numpy only (stats is numpy).
"""
import math

SCENARIOS = ("single-stream", "server")
# The scenario columns of a CSV/JSON row, by their stored (unit-less) names: exports carry the twins (names.py).
QUERY_COLUMNS = ("scenario", "queries", "queries_served", "target_qps", "offered_qps", "achieved_qps", "keep_up",
                 "query_latency_mean", "query_latency_p50", "query_latency_p50_ci95", "query_latency_p50_ci95_low",
                 "query_latency_p50_ci95_high", "query_latency_p90", "query_latency_p99", "query_latency_p99_ci95",
                 "query_latency_p99_ci95_low", "query_latency_p99_ci95_high",
                 "bound_percentile", "latency_bound", "bound_latency", "bound_latency_upper", "queries_over_bound",
                 "within_bound", "peak_qps", "peak_qps_high")


def finite_number(value):
    """True for an int or float (not a bool) that is neither NaN nor infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def enough(count, q):
    """Whether `count` values give the q-th percentile (stats.minimum_count); an unknown count is taken as enough."""
    from mpirunner import stats

    try:
        return count is None or isinstance(count, bool) or stats.enough_for_percentile(int(count), q)
    except (TypeError, ValueError):
        return True


def needs_text(names=("p50", "p90", "p99")):
    """The footnote of an n/a percentile: 'too few values for that percentile (a p50 needs 7, a p90 44, ...)'."""
    from mpirunner import stats

    counts = [f"a {name} {'needs ' if index == 0 else ''}{stats.minimum_count(stats.PERCENTILES[name])}"
              for index, name in enumerate(names)]
    return (f"too few values for that percentile ({', '.join(counts)}: "
            f"{100 * stats.PERCENTILE_CONFIDENCE:g}% confidence that the largest value bounds it)")


def scenario_of(run):
    """The run's ScenarioSummary when it is a single-stream or server run, else None."""
    scenario = getattr(run, "scenario", None)
    return scenario if scenario is not None and scenario.scenario in SCENARIOS else None


def query_percentile(scenario, q):
    """The stored query latency percentile q (ms) when the run had enough queries for it, else None."""
    value = getattr(scenario, f"query_latency_p{q:g}", None)
    return value if finite_number(value) and enough(scenario.queries, q) else None


def query_interval(scenario, q):
    """(low, high) of a query percentile's stored 95% interval, or (None, None) (not stored, or too few queries)."""
    interval = getattr(scenario.intervals, f"query_latency_p{q:g}", None)
    if query_percentile(scenario, q) is None or interval is None:
        return None, None
    low, high = interval.low, interval.high
    return (low, high) if finite_number(low) and finite_number(high) else (None, None)


def _if_enough(scenario, value):
    """`value` when it is a number and the run had enough queries for its judged percentile, else None."""
    if scenario.bound_percentile is None or not finite_number(value):
        return None
    return value if enough(scenario.queries, scenario.bound_percentile) else None


def judged_latency(scenario):
    """The judged percentile (bound_percentile) of a server run with a bound, or None (too few queries, no bound)."""
    return _if_enough(scenario, scenario.bound_latency)


def upper_bound(scenario):
    """The judged percentile's 99% upper confidence bound (ms), or None (an older file, too few queries)."""
    return _if_enough(scenario, scenario.bound_latency_upper)


def within_bound(scenario):
    """Whether the point kept its latency bound (the upper confidence bound when the file stores it, else the
    percentile itself; too few queries for it is a fail); None without a bound."""
    if scenario.latency_bound is None or scenario.bound_percentile is None:
        return None
    judged = upper_bound(scenario) if scenario.bound_latency_upper is not None else judged_latency(scenario)
    return judged is not None and judged <= scenario.latency_bound


def mean_latency(run):
    """The runner's `latency avg`: the query latency mean of a scenario run, else the batch latency mean (ms)."""
    scenario = scenario_of(run)
    if scenario is not None and scenario.query_latency_mean is not None:
        return scenario.query_latency_mean
    return run.summary.latency.mean


def peak_text(peak, high=None):
    """'22.9 QPS' or '[22.9, 25.0] QPS' (a search's peak with its interval), '' when none was found."""
    if not finite_number(peak):
        return ""
    return f"[{peak:.1f}, {high:.1f}] QPS" if finite_number(high) and high > peak else f"{peak:.1f} QPS"


def query_columns(run):
    """The scenario columns of a run's CSV/JSON row ({} for an offline run), percentiles by the one rule."""
    scenario = scenario_of(run)
    if scenario is None:
        return {}
    row = {name: getattr(scenario, name, None) for name in QUERY_COLUMNS}
    for q in (50, 90, 99):
        row[f"query_latency_p{q}"] = query_percentile(scenario, q)
    for q in (50, 99):
        low, high = query_interval(scenario, q)  # (None, None) without an interval
        half = None if low is None else getattr(scenario.intervals, f"query_latency_p{q}").half_width
        row.update({f"query_latency_p{q}_ci95_low": low, f"query_latency_p{q}_ci95_high": high,
                    f"query_latency_p{q}_ci95": half})
    row.update(bound_latency=judged_latency(scenario), bound_latency_upper=upper_bound(scenario),
               within_bound=within_bound(scenario))
    return row
