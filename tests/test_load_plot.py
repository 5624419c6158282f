"""`mpirunner-report --plot` on server runs (report/figures.py server_figure): what the figure holds, read back from
the matplotlib objects (Agg), for files written through the results layer as a peak search writes them."""
import numpy as np
import pytest

from mpirunner.runfile.plain import RunResult, write_results

pytest.importorskip("matplotlib")

BOUND_MS = 30.0
FAILED = "point failed (INVALID or over the bound)"


def _point(target_qps, p50, p90, p99, peak=float("nan"), batch_size=4, valid=True, order=0):
    """A server point's attributes as serve.py stores them (the load plot reads attributes only)."""
    return {"scenario": "server", "batch_size": batch_size, "model": "resnet18", "target_qps": target_qps,
            "offered_qps": target_qps * 0.97, "achieved_qps": target_qps * 0.96, "query_latency_p50": p50,
            "query_latency_p90": p90, "query_latency_p99": p99, "latency_bound": BOUND_MS,
            "bound_percentile": 99.0, "bound_latency": p99, "peak_search": True, "peak_point": order,
            "peak_qps": peak, "valid": valid, "validity_reason": [] if valid else ["over the bound"],
            "status": "measured", "failure_reason": ""}


# (target QPS, p50, p90, p99) in the order a search measures them: bracket up from 100, then bisect
SEARCH = [(100.0, 2.0, 3.0, 5.0), (200.0, 2.5, 4.0, 9.0), (400.0, 4.0, 12.0, 80.0), (300.0, 3.0, 7.0, 20.0),
          (350.0, 3.5, 9.0, 45.0)]
PEAK = 300.0


def _write(path, points, batch_size=4, peak=PEAK):
    runs = []
    for order, (qps, p50, p90, p99) in enumerate(points):
        attrs = _point(qps, p50, p90, p99, peak=peak, batch_size=batch_size, valid=p99 <= BOUND_MS, order=order)
        runs.append(RunResult(name=f"bs{batch_size:05d}-qps{qps:012.3f}", attrs=attrs))
    return write_results(path, {"world_size": 2}, [{"rank": 0, "host": "a"}, {"rank": 1, "host": "a"}], runs)


@pytest.fixture
def drawn(monkeypatch, tmp_path):
    """plot.plot(files) through the report's own loader; returns (figure, PNG path) with the figure kept open."""
    from mpirunner.report import figures as plot
    from mpirunner.report.rows import load

    figures = []

    def draw(*paths):
        plt = plot.pyplot()
        monkeypatch.setattr(plt, "close", figures.append)
        written = plot.plot([load(path) for path in paths], tmp_path / "load.png")
        return figures[-1], written

    yield draw
    monkeypatch.undo()  # plt.close is plt.close again
    import matplotlib.pyplot

    for figure in figures:
        matplotlib.pyplot.close(figure)


def _lines(axis):
    return {line.get_label(): line for line in axis.get_lines()}


def test_a_search_draws_each_percentile_against_the_target_load_with_the_bound_and_the_peak(tmp_path, drawn):
    figure, written = drawn(_write(tmp_path / "search.h5", SEARCH))
    assert written.stat().st_size > 10_000
    axis, load = figure.axes
    lines = _lines(axis)
    order = sorted(SEARCH)
    for column, name in ((1, "p50"), (2, "p90"), (3, "p99")):
        np.testing.assert_array_equal(lines[name].get_xdata(), [point[0] for point in order])
        np.testing.assert_array_equal(lines[name].get_ydata(), [point[column] for point in order])
    bound = lines[f"bound {BOUND_MS:g} ms"]
    assert set(bound.get_ydata()) == {BOUND_MS}
    peak = lines[f"peak {PEAK:.1f} QPS"]
    assert set(peak.get_xdata()) == {PEAK}
    invalid = [collection for collection in axis.collections if collection.get_label() == FAILED]
    (marks,) = invalid
    assert sorted(marks.get_offsets()[:, 0]) == [350.0, 400.0]  # the points over the bound
    low, high = axis.get_ylim()
    assert low <= 2.0 and high >= 80.0 and axis.get_yscale() == "log"
    assert axis.get_xlabel().startswith("target load")
    # the points told apart: each one's offered load (as scheduled) and achieved rate against its target
    offered, achieved = _lines(load)["offered (as scheduled)"], _lines(load)["achieved"]
    np.testing.assert_allclose(offered.get_ydata(), [0.97 * point[0] for point in order])
    np.testing.assert_allclose(achieved.get_ydata(), [0.96 * point[0] for point in order])


def test_a_stopped_search_has_no_peak_line(tmp_path, drawn):
    figure, _ = drawn(_write(tmp_path / "stopped.h5", SEARCH[:3], peak=float("nan")))
    labels = list(_lines(figure.axes[0]))
    assert not any(label.startswith("peak") for label in labels)
    assert {"p50", "p90", "p99", f"bound {BOUND_MS:g} ms"} <= set(labels)


def test_an_unserved_point_is_marked_on_the_top_edge_not_lost(tmp_path, drawn):
    points = [(100.0, 2.0, 3.0, 5.0), (200.0, 3.0, 6.0, 12.0), (900.0, 50.0, float("inf"), float("inf"))]
    figure, _ = drawn(_write(tmp_path / "unserved.h5", points, peak=200.0))
    axis = figure.axes[0]
    (marks,) = [collection for collection in axis.collections if collection.get_label() == FAILED]
    np.testing.assert_array_equal(marks.get_offsets()[:, 0], [900.0])
    assert marks.get_offsets()[0, 1] >= 50.0
    assert _lines(axis)["p50"].get_ydata()[-1] == 50.0


def test_two_searches_at_different_batch_sizes_are_two_curves_not_one(tmp_path, drawn):
    small = _write(tmp_path / "bs2.h5", SEARCH[:3], batch_size=2, peak=200.0)
    large = _write(tmp_path / "bs8.h5", [(150.0, 1.0, 2.0, 4.0), (600.0, 5.0, 9.0, 25.0)], batch_size=8, peak=600.0)
    figure, _ = drawn(small, large)
    lines = _lines(figure.axes[0])
    p99 = {label: line for label, line in lines.items() if label.startswith("p99")}
    assert len(p99) == 2, list(lines)
    by_batch = {("bs 2" in label): line for label, line in p99.items()}
    np.testing.assert_array_equal(by_batch[True].get_xdata(), [100.0, 200.0, 400.0])
    np.testing.assert_array_equal(by_batch[False].get_xdata(), [150.0, 600.0])
    np.testing.assert_array_equal(by_batch[False].get_ydata(), [4.0, 25.0])
    assert {label for label in lines if label.startswith("peak")} == {"peak 200.0 QPS (bs 2)", "peak 600.0 QPS (bs 8)"}


def test_a_point_shows_its_interval_upper_bound_and_pass_or_fail_and_the_peak_its_interval(tmp_path, drawn):
    """Points with enough queries (459 for a p99) and the fields a search now stores: the p99's 95% interval as an
    error bar, its 99% upper bound (^), a filled marker for a point that passed and a hollow one for one that failed,
    the peak as a band [peak_qps, peak_qps_high]; a point with too few queries draws no p99 (the one rule)."""
    points = [(100.0, 2.0, 3.0, 5.0, 6.0, 500), (200.0, 3.0, 8.0, 20.0, 35.0, 900),
              (300.0, 4.0, 9.0, 25.0, 28.0, 100)]
    runs = []
    for order, (qps, p50, p90, p99, upper, queries) in enumerate(points):
        attrs = _point(qps, p50, p90, p99, peak=100.0, order=order, valid=queries >= 459 and upper <= BOUND_MS)
        attrs.update(queries=queries, bound_latency_upper=upper, peak_qps_high=200.0, query_latency_p99_ci95_low=p99 - 1,
                     query_latency_p99_ci95_high=p99 + 2)
        runs.append(RunResult(name=f"bs00004-qps{qps:012.3f}", attrs=attrs))
    path = write_results(tmp_path / "upper.h5", {"world_size": 1}, [{"rank": 0, "host": "a"}], runs)
    figure, _ = drawn(path)
    axis = figure.axes[0]
    lines = _lines(axis)
    np.testing.assert_array_equal(lines["p99"].get_ydata(), [5.0, 20.0, np.nan])  # 100 queries: no p99
    np.testing.assert_array_equal(lines["p50"].get_ydata(), [2.0, 3.0, 4.0])
    np.testing.assert_array_equal(lines["99% upper bound"].get_ydata(), [6.0, 35.0, np.nan])
    marks = [line for line in axis.get_lines() if line.get_label().startswith("_") and line.get_marker() == "o"]
    filled = {float(line.get_xdata()[0]): line.get_markerfacecolor() != "white" for line in marks}
    assert filled == {100.0: True, 200.0: False, 300.0: False}  # 6 <= 30 ms; 35 > 30; too few queries to judge
    (band,) = [patch for patch in axis.patches]
    assert (band.get_x(), band.get_x() + band.get_width()) == (100.0, 200.0)
    assert "peak [100.0, 200.0] QPS" in lines


def test_the_text_and_csv_report_read_a_search_file_that_stored_no_summary(tmp_path):
    import csv
    import subprocess
    import sys

    path = _write(tmp_path / "search.h5", SEARCH)
    text = subprocess.run([sys.executable, "-m", "mpirunner.report", str(path)], capture_output=True, text=True)
    assert text.returncode == 0, text.stderr
    assert "batch 4 at 300.0 QPS: ? queries" in text.stdout and "peak 300.0 QPS" in text.stdout
    table = tmp_path / "search.csv"
    written = subprocess.run([sys.executable, "-m", "mpirunner.report", str(path), "--csv", str(table)],
                             capture_output=True, text=True)
    assert written.returncode == 0, written.stderr
    rows = list(csv.DictReader(table.open()))
    assert [float(row["offered_qps_target"]) for row in rows] == sorted(qps for qps, *_ in SEARCH)
    assert {row["throughput_samples_per_s"] for row in rows} == {""}  # not stored: blank, not made up
