"""The server scenario's rules: it kept up with the offered load, served every query within the drain bound,
had enough queries for its percentile and held the latency bound. Each failed rule is a Check whose reason
carries its remedy; checks.decide_validity judges a server run by these instead of the timing rules."""
from mpirunner.checks.check import failed, passed

KEEP_UP_SHARE = 0.95       # served QPS below this share of the offered QPS: "did not keep up"


def scenario_reasons(summary, drain_seconds=None):
    """The summary's (scenarios.summarize_queries) verdict reasons, each with a remedy; empty when the rules hold."""
    from mpirunner.scenarios import minimum_queries

    reasons = []
    if summary.get("queries_unserved"):
        drain = f" ({drain_seconds:.1f} s after issuing stopped)" if drain_seconds is not None else ""
        reasons.append(f"{summary['queries_unserved']} of {summary['queries']} queries unserved when the drain "
                       f"bound{drain} ran out — lower --target-qps or add instances")
    keep_up = summary.get("keep_up")
    if keep_up is not None and not keep_up >= KEEP_UP_SHARE:
        reasons.append(f"did not keep up: achieved {keep_up:.2f} of the offered load "
                       f"({summary['achieved_qps']:.1f} of {summary['offered_qps']:.1f} QPS, "
                       f"target {summary['target_qps']:g}) — lower --target-qps or add instances")
    if "latency_bound" in summary:
        name = f"p{summary['bound_percentile']:g}"
        needed = minimum_queries(summary["bound_percentile"])
        if summary["queries"] < needed:
            reasons.append(f"only {summary['queries']} queries: too few for a {name} (needs {needed}) "
                           "— raise --min-duration")
        if not summary["bound_latency"] <= summary["latency_bound"]:
            reasons.append(f"{name} query latency {summary['bound_latency']:.3f} ms over the bound "
                           f"{summary['latency_bound']:.3f} ms — lower --target-qps or --max-batch-wait-ms, "
                           "or add instances")
    return reasons


def scenario_checks(summary, drain_seconds=None):
    reasons = scenario_reasons(summary, drain_seconds=drain_seconds)
    return [failed("scenario", reason) for reason in reasons] or [passed("scenario")]
