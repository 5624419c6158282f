"""The peak-QPS search (--find-peak-qps): the highest total load a server holds, and the interval it lies in.
No MPI, no torch: run_point(target_qps) returns a PointOutcome that is the same on every rank, so all ranks take
the same path. Loads are bracketed by doubling (or halving), then bisected (docs/scenarios.md)."""
import math
from dataclasses import dataclass
from typing import Callable, List, Optional

import numpy as np

from mpirunner.scenarios import latency_percentile

PEAK_MAX_POINTS = 24
PEAK_LOWEST_SHARE = 1 / 16  # a search that fails from its start tries loads down to this share of it


@dataclass
class PointOutcome:
    """One served load, the same on every rank: queries, window, verdict and rank 0's record."""

    queries: object
    duration_seconds: float
    passed: bool
    kept: object = None


@dataclass
class PeakPoint:
    """One measured point: loads asked for and offered, its queries, the percentile (s) with its 99% bounds, its
    verdict, and the lower bound of the percentile over the queries that found their rank idle (NaN: too few)."""

    target_qps: float
    offered_qps: float
    queries: int
    percentile_seconds: float
    low_seconds: float
    high_seconds: float
    passed: bool
    outcome: PointOutcome
    idle_low_seconds: float = float("nan")


@dataclass
class PeakSearch:
    """The search's outcome: peak_interval's two loads (None where there is none), its points, why it stopped."""

    peak_qps: Optional[float]
    peak_qps_high: Optional[float]
    points: List[PeakPoint]
    stop_reason: str


def percentile_bounds(latency_seconds, percentile):
    """(low, high): 99% confidence bounds of the percentile by stats.percentile_upper_bound (the lower one by
    symmetry, on the negated values); +inf latencies (unserved) count as over any bound; NaN with too few."""
    from mpirunner.stats import percentile_upper_bound

    values = np.asarray(latency_seconds, dtype=np.float64)
    return -percentile_upper_bound(-values, 100.0 - percentile), percentile_upper_bound(values, percentile)


def peak_interval(points):
    """(peak_qps, peak_qps_high): the highest passing offered load below the lowest failing one, and that one.
    A pass above a failure (not monotone within the noise) never raises the peak."""
    failing = [point.offered_qps for point in points if not point.passed]
    high = min(failing) if failing else None
    passing = [point.offered_qps for point in points if point.passed and (high is None or point.offered_qps < high)]
    return (max(passing) if passing else None), high


def indistinguishable(passing, failing):
    """Why two neighbouring points cannot be told apart, or None: the gap in load is within 1/sqrt(queries)
    (the spread of a Poisson count), or their percentiles' 99% bounds overlap."""
    queries = min(passing.queries, failing.queries)
    if queries and failing.offered_qps - passing.offered_qps <= passing.offered_qps / math.sqrt(queries):
        return (f"{passing.offered_qps:.1f} and {failing.offered_qps:.1f} QPS are within 1/sqrt({queries}) of "
                "each other")
    if failing.low_seconds <= passing.high_seconds:
        return (f"the percentiles at {passing.offered_qps:.1f} and {failing.offered_qps:.1f} QPS overlap at 99% "
                "confidence")
    return None


def find_peak_qps(run_point: Callable, start_qps, percentile=99.0, bound_seconds=None, max_points=PEAK_MAX_POINTS,
                  min_qps=None):
    """Highest total load whose point passes (docs/scenarios.md, "Search"): bracket from start_qps (halving down
    to min_qps, default start_qps x PEAK_LOWEST_SHARE), then bisect until the ends are indistinguishable."""
    floor = start_qps * PEAK_LOWEST_SHARE if min_qps is None else min_qps
    points: List[PeakPoint] = []

    def measure(target_qps):
        outcome = run_point(target_qps)
        latency = outcome.queries.latency()
        low, high = percentile_bounds(latency, percentile)
        idle_low, _ = percentile_bounds(latency[outcome.queries.found_idle()], percentile)
        point = PeakPoint(float(target_qps), len(latency) / float(outcome.duration_seconds), len(latency),
                          float(latency_percentile(latency, percentile)), low, high, bool(outcome.passed), outcome,
                          idle_low)
        points.append(point)
        return point

    passing, failing, stop_reason = None, None, "max points"
    target = float(start_qps)
    while len(points) < max_points and (passing is None or failing is None):
        point = measure(target)
        if point.passed:
            passing, target = point, target * 2.0
        else:
            failing = point
            if passing is None and bound_seconds is not None and point.idle_low_seconds > bound_seconds:
                stop_reason = (f"no lower load can pass: at {point.offered_qps:.1f} QPS the queries that found their "
                               f"rank idle had their p{percentile:g} over the bound at 99% confidence")
                break
            if passing is None and target / 2.0 < floor * (1 - 1e-9):
                stop_reason = "the lowest load failed"
                break
            target /= 2.0
    while passing is not None and failing is not None and len(points) < max_points:
        reason = indistinguishable(passing, failing)
        if reason is not None:
            stop_reason = reason
            break
        point = measure((passing.target_qps + failing.target_qps) / 2.0)
        if point.passed:
            passing = point
        else:
            failing = point
    peak, high = peak_interval(points)
    return PeakSearch(peak, high, points, stop_reason)
