"""The runner's lines about a load scenario's queries (docs/scenarios.md), part of text.py's run block."""


def scenario_lines(attrs, estimate_text):
    """single-stream and server runs (docs/scenarios.md): query latency from the scheduled arrival, and the load.
    estimate_text: text.py's `x [low, high]` formatter of a stored estimate and its interval."""
    if attrs.get("scenario") not in ("single-stream", "server"):
        return []
    latency = "  ".join(f"p{q} {estimate_text(attrs, f'query_latency_p{q}', '.3f')}" for q in (50, 90, 99)
                        if f"query_latency_p{q}" in attrs)
    lines = [f"{attrs['scenario']}: {attrs['queries']} queries, query latency ms: {latency}  "
             f"mean {attrs.get('query_latency_mean', float('nan')):.3f}"]
    if attrs["scenario"] == "server":
        bound = (f"   {100 * attrs['share_over_bound']:.2f}% over the {attrs['latency_bound']:g} ms bound "
                 f"(p{attrs['bound_percentile']:g} {attrs['bound_latency']:.3f} ms)" if "latency_bound" in attrs else "")
        lines.append(f"load: target {attrs['target_qps']:.1f} QPS, offered {attrs['offered_qps']:.1f}, achieved "
                     f"{attrs['achieved_qps']:.1f} ({attrs['keep_up']:.2f}), {attrs['queries_unserved']} unserved, "
                     f"mean wait {attrs.get('query_wait_mean', float('nan')):.3f} ms, padding "
                     f"{100 * attrs['padding_share']:.1f}%{bound}")
    return lines


def peak_search_line(peak_qps, points, percentile, bound_ms, batch_size):
    """The runner's closing line of a --find-peak-qps search (its points are in the file already)."""
    where = f"{len(points)} points in the file as bs{batch_size:05d}-qps*"
    if peak_qps is None:
        return (f"peak search, batch {batch_size}: no load kept p{percentile:g} within {bound_ms:g} ms "
                f"(lowest tried {min(points):.1f} QPS); {where}")
    return (f"peak search, batch {batch_size}: {peak_qps:.1f} QPS in total is the highest load with p{percentile:g} "
            f"within {bound_ms:g} ms; {where}")
