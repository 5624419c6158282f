"""The scenario rules (docs/scenarios.md) that judge single-stream and server runs: every query served, a server
kept up while issuing, enough queries for the percentile, and its 99% upper bound within --latency-bound."""
from mpirunner.checks.check import failed, passed

KEEP_UP_SHARE = 0.97  # fewer of the scheduled queries completed while issuing (scenarios.summarize_queries)


def scenario_reasons(summary, drain_seconds=None, percentile=None):
    """The verdict reasons of a scenarios.summarize_queries summary, each with a remedy. Too few queries for the
    percentile (the bound's, else --percentile) is a reason for single-stream, and for a server with a bound."""
    from mpirunner.stats import minimum_count

    reasons = []
    single_stream = summary.get("scenario") == "single-stream"
    if summary.get("queries_unserved"):
        drain = f" ({drain_seconds:.1f} s after issuing stopped)" if drain_seconds is not None else ""
        reasons.append(f"{summary['queries_unserved']} of {summary['queries']} queries unserved when the drain "
                       f"bound{drain} ran out — lower --target-qps or add instances")
    keep_up = summary.get("keep_up")
    if keep_up is not None and not keep_up >= KEEP_UP_SHARE:
        reasons.append(f"did not keep up: achieved {summary['completed_while_issuing']} of {summary['queries']} "
                       f"queries while issuing (keep-up {keep_up:.3f} < {KEEP_UP_SHARE:g}, counting "
                       f"{summary['in_flight_allowance']} in flight; offered {summary['offered_qps']:.1f} QPS, "
                       f"target {summary['target_qps']:g}) — lower --target-qps or add instances")
    bounded = "latency_bound" in summary
    percentile = summary["bound_percentile"] if bounded else percentile
    if percentile is not None and (bounded or single_stream):
        name, needed = f"p{percentile:g}", minimum_count(percentile)
        if summary["queries"] < needed:
            remedy = "raise --iterations" if single_stream else "raise --min-duration"
            reasons.append(f"only {summary['queries']} queries: too few for a {name} (needs {needed}, "
                           f"stats.minimum_count) — {remedy}")
        elif bounded and not summary.get("bound_latency_upper", float("inf")) <= summary["latency_bound"]:
            reasons.append(f"{name} query latency over the bound: {summary['bound_latency_upper']:.3f} ms at 99% "
                           f"confidence > {summary['latency_bound']:g} ms ({name} {summary['bound_latency']:.3f} ms; "
                           f"{summary['queries_over_bound']} of {summary['queries']} queries over the bound) — lower "
                           "--target-qps or --max-batch-wait-ms, or add instances")
    return reasons


def scenario_checks(summary, drain_seconds=None, percentile=None):
    reasons = scenario_reasons(summary, drain_seconds=drain_seconds, percentile=percentile)
    return [failed("scenario", reason) for reason in reasons] or [passed("scenario")]
