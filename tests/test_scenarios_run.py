"""Load scenarios end to end (resnet18 at 32 px, 2 ranks under mpiexec, CPU): the file a user gets."""
import signal

import h5py
import numpy as np
import pytest

from conftest import run_cli
from mpirunner import scenarios

pytestmark = pytest.mark.filterwarnings("ignore")

MODEL = ["--model", "resnet18", "--image-size", "32", "--device", "cpu", "--no-progress", "--threads", "1"]


def _run(tmp_path, name, *args):
    output = tmp_path / f"{name}.h5"
    result = run_cli([*MODEL, *args, "--output", output], ranks=2, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with h5py.File(output) as h5:
        (group,) = h5["runs"].values()
        attrs = dict(group.attrs)
        queries = {key: group["queries"][key][()] for key in group["queries"]}
    return attrs, queries, result.stdout


def _expected_arrivals(total_qps, seconds, seed=0):
    """Every rank's schedule, regenerated from the seed: the file must hold each of these queries."""
    return [scenarios.poisson_schedule(scenarios.rank_share(total_qps, 2), seconds, scenarios.schedule_rng(seed, rank))
            for rank in range(2)]


def test_single_stream_then_server_at_low_load_then_overload(tmp_path):
    """What is asserted holds on a busy machine too (a test in a loaded CI must not flake on timing): counts, the
    seeded schedules, agreement between numbers, and verdicts that do not follow the timings. Timing comparisons
    (how close a query that found its rank idle comes to single-stream) are benchmarks/server_idle.py's."""
    # single-stream is judged by the scenario rules alone: 460 queries (a p99 needs 459), all served -> VALID
    # whatever the step times do (the offline cv and warm-up rules do not apply)
    single, single_queries, stdout = _run(tmp_path, "single", "--scenario", "single-stream", "--iterations", "230")
    assert "single-stream: 460 queries" in stdout
    assert single["queries"] == 460 and single_queries["served"].all() and single["valid"], single["validity_reason"]
    service_seconds = single["query_latency_p50"] / 1e3

    # Low load (each rank busy about 5% of the time): the seeded schedule offers exactly its load, every query
    # is in the file, latency counts from the scheduled arrival
    low_qps = 0.05 * 2 / service_seconds
    seconds = min(20.0, max(4.0, 120 / low_qps))
    server, queries, stdout = _run(tmp_path, "low", "--scenario", "server", "--batch-size", "1",
                                   "--target-qps", f"{low_qps:.3f}", "--min-duration", seconds)
    found_idle = scenarios.QueryLog(**queries).found_idle()
    assert found_idle.any()  # at 5% load queries find their rank idle
    latency_ms = 1e3 * (queries["end"] - queries["scheduled"])
    assert server["query_latency_p99"] == pytest.approx(np.percentile(latency_ms, 99), rel=0.05)
    expected = _expected_arrivals(float(f"{low_qps:.3f}"), seconds)
    for rank in range(2):
        np.testing.assert_allclose(np.sort(queries["scheduled"][queries["rank"] == rank]), expected[rank])
    assert server["offered_qps"] == pytest.approx(sum(len(e) for e in expected) / seconds)
    # each rank schedules round(its share x seconds) queries: at most half a query each from the target
    assert abs(server["offered_qps"] - server["target_qps"]) * seconds <= 0.5 * 2 + 1e-9
    assert np.all(queries["end"] - queries["scheduled"] >= queries["end"] - queries["start"])
    done = int(np.count_nonzero(queries["served"] & (queries["end"] <= seconds)))
    assert server["completed_while_issuing"] == done
    assert server["keep_up"] == pytest.approx(min(1.0, (done + server["in_flight_allowance"]) / server["queries"]))

    # 10x the single-stream rate at batch 1 (two ranks): an overload on any machine, INVALID for not keeping up
    overload_qps, seconds = 10 * 2 / service_seconds, 3.0
    over, queries, stdout = _run(tmp_path, "over", "--scenario", "server", "--batch-size", "1",
                                 "--target-qps", f"{overload_qps:.3f}", "--min-duration", seconds)
    assert not over["valid"]
    reasons = list(over["validity_reason"])
    assert any(str(r).startswith("did not keep up") and "lower --target-qps or add instances" in str(r)
               for r in reasons)
    expected = _expected_arrivals(float(f"{overload_qps:.3f}"), seconds)
    assert queries["scheduled"].size == sum(len(e) for e in expected)  # served or not, every query is there
    assert (~queries["served"]).sum() == over["queries_unserved"]
    assert over["keep_up"] < 0.97
    served_end = np.nanmax(queries["end"])
    assert served_end <= seconds + over["drain_seconds"] + 10 * service_seconds + 1.0


# a p90 search keeps the points small (4 x 44 queries) for a test; the default --percentile 99 takes 4 x 459
PEAK = ["--find-peak-qps", "--latency-bound", "50", "--percentile", "90", "--batch-size", "2"]


def _points(output):
    with h5py.File(output) as h5:
        return {name: dict(group.attrs) for name, group in h5["runs"].items()}


def _reasons(attrs):
    reasons = attrs["validity_reason"]
    return [reasons] if isinstance(reasons, str) else [str(reason) for reason in reasons]


def test_peak_search_keeps_every_point_and_names_the_peak_with_its_interval(tmp_path):
    output = tmp_path / "peak.h5"
    result = run_cli([*MODEL, *PEAK, "--target-qps", "80", "--output", output], ranks=2, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    points = _points(output)
    assert len(points) >= 3 and all(name.startswith("bs00002-qps") for name in points)
    assert "bs00002-qps00000080.000" in points
    for attrs in points.values():
        chosen = scenarios.search_point_seconds(attrs["target_qps"], 0.0, 90.0, world_size=2)
        assert attrs["duration_seconds"] == pytest.approx(chosen)
        assert attrs["queries"] == 4 * 44 and attrs["offered_qps"] == pytest.approx(attrs["target_qps"], rel=1e-6)
        assert not any("too few" in reason for reason in _reasons(attrs))
        # the verdict is the scenario rules, the point's pass is its verdict
        holds = (attrs["bound_latency_upper"] <= 50 and attrs["keep_up"] >= 0.97 and attrs["queries_unserved"] == 0)
        assert bool(attrs["valid"]) == holds, _reasons(attrs)
    assert sorted(attrs["peak_point"] for attrs in points.values()) == list(range(len(points)))
    found = {(float(attrs["peak_qps"]), float(attrs["peak_qps_high"])) for attrs in points.values()}
    assert len(found) == 1  # every point says what the search found
    ((peak, high),) = found
    failing = [attrs["offered_qps"] for attrs in points.values() if not attrs["valid"]]
    passing = [attrs["offered_qps"] for attrs in points.values()
               if attrs["valid"] and attrs["offered_qps"] < min(failing)]
    assert failing, "a search ends with a failing point above its peak (or below every pass)"
    assert high == min(failing)
    if passing:
        assert peak == max(passing) < high
        assert (f"peak search, batch 2: {peak:.1f} QPS in total is the highest load with p90 within 50 ms "
                f"(the peak lies in [{peak:.1f}, {high:.1f}] QPS)") in result.stdout
    else:
        assert np.isnan(peak) and "peak search, batch 2: no load kept p90 within 50 ms" in result.stdout


def test_peak_search_stopped_part_way_keeps_the_points_it_finished(tmp_path):
    from tests.test_reliability import Watched

    output = tmp_path / "peak.h5"
    job = Watched([*MODEL, *PEAK, "--output", output], output=output)
    assert job.wait_for_file() is not None, job.stderr  # the first point is written as soon as it is measured
    job.process.send_signal(signal.SIGTERM)
    job.finish()
    assert job.process.returncode == 128 + signal.SIGTERM, job.stderr
    points = _points(output)
    assert 1 <= len(points) and all(np.isnan(attrs["peak_qps"]) for attrs in points.values())  # search unfinished
    assert "peak search" not in job.stdout


def test_out_of_memory_preparing_the_largest_batch_size_is_a_failed_run_on_every_rank(tmp_path):
    """The server prepares batch sizes 1, 2 and 4 (runs 1-3 of MPIRUNNER_FAULT); rank 1 runs out of memory in
    the first call of size 4: every rank agrees during preparation, one line, exit 5, the size a failed run."""
    from tests.test_cluster_reality import _clean_env

    output = tmp_path / "server.h5"
    result = run_cli([*MODEL, "--scenario", "server", "--batch-size", "4", "--target-qps", "50", "--min-duration", "1",
                      "--output", output], ranks=2, timeout=300, env=_clean_env(MPIRUNNER_FAULT="oom:rank=1:run=3:step=1"))
    assert result.returncode == 5, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stdout.splitlines() if "failed" in line]
    assert len(lines) == 1 and "batch size 4" in lines[0] and "rank 1" in lines[0] and "123.0 GiB" in lines[0], lines
    with h5py.File(output) as h5:
        assert list(h5["runs"]) == ["bs00004"]
        failed = h5["runs"]["bs00004"]
        assert failed.attrs["status"] == "failed" and "out of memory on rank 1" in failed.attrs["failure_reason"]
        assert len(failed) == 0, "no step arrays, no queries"
