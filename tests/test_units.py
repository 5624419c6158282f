"""One unit convention (issue 19, items 6 and 7): unit-named twins in the file, unit names in every export with
cv in percent, text read back as str, a reader for files with either name; readable plots (per-file legends,
bins from the sample count, log ticks as plain numbers with units)."""
import csv
import json
import re

import h5py
import numpy as np
import pytest

from mpirunner import report, stats
from mpirunner.report import figures as plot, rows
from mpirunner.report.figures import log_ticks, sample_bins
from mpirunner.runfile.plain import write_results
from mpirunner.runfile.names import UNITS, in_unit, unit_name
from tests.conftest import run_cli
from tests.test_report import make_file

SMALL = ["--model", "resnet18", "--image-size", "32", "--warmup-iterations", "1", "--no-progress"]


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    output = tmp_path_factory.mktemp("units") / "run.h5"
    result = run_cli([*SMALL, "--batch-size", "2", "--iterations", "6", "--output", output])
    assert result.returncode == 0, result.stderr
    return output


# --------------------------------------------------------------------------------------- the file

def test_every_unit_less_run_attribute_has_a_unit_named_twin(run_file):
    with h5py.File(run_file) as h5:
        attrs = dict(h5["runs/bs00002"].attrs)
    unit_less = [name for name in attrs if name in UNITS]
    assert {"throughput", "latency_p50", "step_cv", "latency_cv"} <= set(unit_less)
    for name in unit_less:
        assert attrs[unit_name(name)] == pytest.approx(in_unit(name, attrs[name])), name
    assert attrs["step_cv_percent"] == pytest.approx(100 * attrs["step_cv"])
    assert attrs["latency_p50_ms"] == attrs["latency_p50"] and attrs["throughput_samples_per_s"] == attrs["throughput"]


def test_text_attributes_read_back_as_str_even_when_given_as_bytes(tmp_path, run_file):
    path = write_results(tmp_path / "bytes.h5", {"mpi_version": b"MPICH Version: 4", "notes": [b"first", "second"]},
                         [{"rank": 0, "host": "vm"}], [])
    with h5py.File(path) as h5:
        assert h5.attrs["mpi_version"] == "MPICH Version: 4"
        assert list(h5.attrs["notes"]) == ["first", "second"]
    with h5py.File(run_file) as h5:  # a real run: no attribute anywhere reads back as bytes
        nodes = [h5, h5["ranks"], *h5["runs"].values()]
        values = [value for node in nodes for value in node.attrs.values()]
    flat = [item for value in values for item in (value.tolist() if isinstance(value, np.ndarray) else [value])]
    assert flat and not [item for item in flat if isinstance(item, (bytes, np.bytes_))]


# -------------------------------------------------------------------------------------- the exports

def _csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("which", ["written by the runner", "written before the twins"])
def test_report_csv_and_json_name_their_units_and_give_cv_in_percent(tmp_path, run_file, which):
    path = run_file if which == "written by the runner" else make_file(tmp_path / "old.h5", steps=30)
    assert report.main([str(path), "--csv", str(tmp_path / "r.csv"), "--json", str(tmp_path / "r.json")]) == 0
    row, = _csv(tmp_path / "r.csv")
    entry, = json.loads((tmp_path / "r.json").read_text())
    assert list(row) == list(entry)
    for column in ("throughput_samples_per_s", "latency_p50_ms", "latency_p99_ms", "step_cv_percent",
                   "latency_cv_percent", "compile_seconds_max"):
        assert column in row, column
    for old in ("throughput", "latency_p50", "cv", "std", "step_cv", "latency_cv"):
        assert old not in row, old
    run = rows.load(path).runs[0]
    seconds = rows.finite_rows(run.arrays.step_seconds)
    assert entry["step_cv_percent"] == pytest.approx(100 * stats.step_cv(np.concatenate(seconds)))
    assert entry["step_cv_percent"] == pytest.approx(100 * run.attrs()["step_cv"])


def test_summary_and_report_exports_agree_on_names_and_values(tmp_path, capsys):
    path = make_file(tmp_path / "u.h5", steps=240, run_extra={"utilization": 0.25})  # 480 latencies: a p99
    assert report.main(["summary", str(path), "--json", str(tmp_path / "s.json")]) == 0
    assert report.main([str(path), "--json", str(tmp_path / "r.json")]) == 0
    summary_row, = json.loads((tmp_path / "s.json").read_text())
    report_row, = json.loads((tmp_path / "r.json").read_text())
    shared = set(summary_row) & set(report_row)
    assert {"throughput_samples_per_s", "latency_p50_ms", "latency_p99_ms", "utilization_percent"} <= shared
    assert summary_row["utilization_percent"] == report_row["utilization_percent"] == pytest.approx(25.0)
    for column in ("throughput_samples_per_s", "latency_p50_ms", "latency_p99_ms"):
        assert summary_row[column] == pytest.approx(report_row[column], rel=1e-9), column


def test_summary_reads_a_file_that_has_only_the_unit_named_attributes(tmp_path):
    path = make_file(tmp_path / "twins.h5", steps=30, run_extra={"utilization": 0.5})
    expected = rows.load(path).run("bs00004").attrs()
    with h5py.File(path, "r+") as h5:  # a file with the canonical names only, as a later schema may write
        attrs = h5["runs/bs00004"].attrs
        for name in ("throughput", "latency_p50", "latency_p99", "utilization"):
            attrs[unit_name(name)] = in_unit(name, attrs[name])
            del attrs[name]
    assert report.main(["summary", str(path), "--json", str(tmp_path / "s.json")]) == 0
    row, = json.loads((tmp_path / "s.json").read_text())
    assert row["throughput_samples_per_s"] == pytest.approx(expected["throughput"])
    assert row["latency_p50_ms"] == pytest.approx(expected["latency_p50"])
    assert row["utilization_percent"] == pytest.approx(50.0)


# ----------------------------------------------------------------------------------------- the plots

@pytest.fixture
def plt():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    yield pyplot
    pyplot.close("all")


def test_multi_file_plot_titles_what_files_share_and_labels_what_sets_each_apart(tmp_path, plt):
    # 240 steps on 2 ranks: 480 latencies, enough for the p99 axis (stats.minimum_count(99) is 459)
    cpu = rows.load(make_file(tmp_path / "a.h5", batch_sizes=(1, 4), steps=240, root_extra={"device_name": "CPU A"}))
    other = rows.load(make_file(tmp_path / "b.h5", batch_sizes=(1, 4), steps=240, root_extra={"device_name": "CPU B"},
                                run_extra={"model": "resnet50"}))
    figure = plot._sweep_figure(plt, [cpu, other])
    title = figure._suptitle.get_text()
    assert "resnet18" not in title and "resnet50" not in title and "CPU A" not in title
    assert "32.32" in title and "2 rank(s)" in title  # what both files share
    labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert "a.h5 (resnet18, cpu on CPU A)" in labels and "b.h5 (resnet50, cpu on CPU B)" in labels
    assert [text.get_text() for text in figure.axes[1].get_legend().get_texts()][:2] == labels[:2]


def _narrow_run(tmp_path, count):
    """A loaded one-run file whose `count` latencies lie between 10 and 11.5 ms."""
    from mpirunner.runfile.parts import RunArrays

    data = rows.load(make_file(tmp_path / "few.h5", ranks=1, steps=count))
    data.run("bs00004").arrays = RunArrays({"batch_latency": np.linspace(0.010, 0.0115, count)[None, :]})
    return data


def test_a_20_sample_histogram_gets_bins_from_its_count_not_two_wide_bars(tmp_path, plt):
    figure = plot._histogram_figure(plt, _narrow_run(tmp_path, 20), "bs00004", per_rank=False)
    bars = [patch for patch in figure.axes[0].patches if patch.get_width() > 0]
    assert len(bars) == sample_bins(20) == 5
    assert sum(bar.get_height() for bar in bars) == 20
    assert sample_bins(1000) == 20 and sample_bins(10 ** 6) == 80


def _tick_texts(figure, axis):
    figure.canvas.draw()
    low, high = sorted(axis.get_view_interval())
    return [label.get_text() for label, tick in zip(axis.get_ticklabels(), axis.get_ticklocs())
            if low <= tick <= high and label.get_text()]


def test_log_axes_read_as_plain_numbers_with_units(tmp_path, plt):
    figure = plot._histogram_figure(plt, _narrow_run(tmp_path, 20), "bs00004", per_rank=False)
    texts = _tick_texts(figure, figure.axes[0].xaxis)
    assert len(texts) >= 3 and all(re.fullmatch(r"\d+(\.\d+)? ms", text) for text in texts), texts
    assert log_ticks(0.3, 7.0) == [0.5, 1.0, 2.0, 5.0]
    assert log_ticks(0.001, 100.0) == pytest.approx([0.001, 0.01, 0.1, 1.0, 10.0, 100.0])


def test_server_plot_latency_axis_reads_as_plain_numbers_with_units(plt):
    from mpirunner.report.figures import server_figure

    runs = [(qps, {"scenario": "server", "target_qps": qps, "valid": True, "query_latency_p50": 0.4 * k,
                   "query_latency_p90": 1.5 * k, "query_latency_p99": 6.0 * k})
            for k, qps in enumerate((100.0, 200.0, 300.0), start=1)]
    figure = server_figure(plt, runs, (8, 4))
    texts = _tick_texts(figure, figure.axes[0].yaxis)
    assert len(texts) >= 3 and all(re.fullmatch(r"\d+(\.\d+)? ms", text) for text in texts), texts


def test_the_named_twins_of_a_scenario_load_go_through_the_writer_the_exports_and_value_of(tmp_path, capsys):
    """target_qps / offered_qps are exported as offered_qps_target / offered_qps_scheduled (names.NAMED_TWINS):
    the writer stores them beside the old names, a run reads back the same, CSV/JSON use only the twins, and
    value_of finds the old name in a file holding only the twins."""
    from mpirunner.runfile.names import NAMED_TWINS, TWINS, exported, unit_twins, value_of
    from mpirunner.runfile.plain import RunResult
    from mpirunner.runfile.run import Run

    assert NAMED_TWINS == {"target_qps": "offered_qps_target", "offered_qps": "offered_qps_scheduled"}
    assert unit_name("target_qps") == "offered_qps_target" and TWINS["offered_qps_scheduled"] == "offered_qps"
    assert unit_name("bound_latency_upper") == "bound_latency_upper_ms"
    attrs = {"batch_size": 2, "model": "resnet18", "scenario": "server", "target_qps": 40.0, "offered_qps": 41.5,
             "achieved_qps": 41.0, "queries": 500, "bound_latency_upper": 12.5, "status": "measured", "valid": True,
             "validity_reason": [], "throughput": 41.0}
    attrs.update(unit_twins(attrs))  # as build.build_run does before a run is written
    path = write_results(tmp_path / "load.h5", {"world_size": 1}, [{"rank": 0, "host": "a"}],
                         [RunResult(name="bs00002", attrs=dict(attrs))])
    with h5py.File(path) as h5:
        stored = dict(h5["runs/bs00002"].attrs)
    assert stored["offered_qps_target"] == 40.0 and stored["offered_qps_scheduled"] == 41.5
    assert stored["bound_latency_upper_ms"] == 12.5
    assert not any(name.endswith("_qps_qps") for name in stored)
    run = rows.load(path).run("bs00002")
    assert (run.scenario.target_qps, run.scenario.offered_qps) == (40.0, 41.5)
    assert Run.from_attrs("bs00002", run.attrs()).attrs() == run.attrs()  # read and written back: the same names
    out = exported({"target_qps": 40.0, "offered_qps": 41.5, "offered_qps_target": 40.0})
    assert out == {"offered_qps_target": 40.0, "offered_qps_scheduled": 41.5}
    twins_only = {"offered_qps_target": 40.0, "offered_qps_scheduled": 41.5}
    assert value_of(twins_only, "target_qps") == 40.0 and value_of(twins_only, "offered_qps") == 41.5
    assert report.main([str(path), "--json", str(tmp_path / "r.json")]) == 0
    assert report.main(["summary", str(path), "--json", str(tmp_path / "s.json")]) == 0
    for exported_rows in (json.loads((tmp_path / name).read_text()) for name in ("r.json", "s.json")):
        (row,) = exported_rows
        assert row["offered_qps_target"] == 40.0 and row["offered_qps_scheduled"] == 41.5
        assert row["achieved_qps"] == 41.0 and row["bound_latency_upper_ms"] is None  # no bound: no upper bound
        assert "target_qps" not in row and "offered_qps" not in row
