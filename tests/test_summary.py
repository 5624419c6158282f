"""`mpirunner-report summary` as a user runs it: many files at a glance, filters, CSV/JSON, trends, the HTML page."""
import csv
import json
import re
import time
from html.parser import HTMLParser

import h5py
import numpy as np
import pytest

from mpirunner import report
from mpirunner.report import rows as summary_module
from tests.summary_files import write_result_file


def run_report(capsys, *argv):
    """main(argv) in process: (exit status, stdout, stderr)."""
    status = report.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def table_lines(out):
    """The table rows of the printed summary: the lines that end with a FILE:RUN cell."""
    return [line for line in out.splitlines() if line.rstrip().split(" ")[-1].rsplit(":", 1)[-1].startswith("bs")
            and not line.startswith("INVALID ")]


@pytest.fixture
def sweep_folder(tmp_path):
    """Three valid runs of different batch sizes, one INVALID run, and files that are not results."""
    folder = tmp_path / "results"
    (folder / "week1").mkdir(parents=True)
    for batch_size in (1, 8, 32):
        write_result_file(folder / "week1" / f"bs{batch_size}.h5", batch_sizes=(batch_size,))
    write_result_file(folder / "stalled.h5", batch_sizes=(4,),
                      invalid_reasons=("step cv 12.0% on rank 0 > 10%", "too short"))
    (folder / "notes.txt").write_text("not a result")
    (folder / "broken.h5").write_bytes(b"\x00" * 64)
    write_result_file(folder / "future.h5", schema="mpirunner/99")
    return folder


def test_four_rows_invalid_marked_and_valid_only_shows_three(sweep_folder, capsys):
    status, out, _ = run_report(capsys, "summary", sweep_folder)
    assert status == 0
    rows = table_lines(out)
    assert len(rows) == 4
    assert [row for row in rows if " INVALID " in row] == [row for row in rows if "stalled.h5" in row]
    assert "INVALID " + str(sweep_folder / "stalled.h5") + ":bs00004: step cv 12.0% on rank 0 > 10%; too short" in out
    assert f"skipped {sweep_folder / 'broken.h5'}: not a readable HDF5 file" in out
    assert f"skipped {sweep_folder / 'future.h5'}: schema mpirunner/99 is newer than mpirunner/1" in out
    assert "1 other file(s) skipped" in out

    status, out, _ = run_report(capsys, "summary", sweep_folder, "--valid-only")
    assert status == 0
    rows = table_lines(out)
    assert len(rows) == 3 and not any("INVALID" in row for row in rows)


def test_filters_and_sort_keys(tmp_path, capsys):
    write_result_file(tmp_path / "a.h5", batch_sizes=(1, 8), model="resnet18")
    write_result_file(tmp_path / "b.h5", batch_sizes=(8,), model="efficientnet-b0", backend="cuda",
                      device_name="NVIDIA H100 80GB HBM3")
    status, out, _ = run_report(capsys, "summary", tmp_path, "--model", "resnet*", "--json", "-")
    assert status == 0 and {row["model"] for row in json.loads(out)} == {"resnet18"}
    status, out, _ = run_report(capsys, "summary", tmp_path, "--device", "h100", "--json", "-")
    assert [row["file"] for row in json.loads(out)] == [str(tmp_path / "b.h5")]
    status, out, _ = run_report(capsys, "summary", tmp_path, "--device", "cpu", "--batch-size", "8", "--json", "-")
    assert [(row["file"], row["batch_size"]) for row in json.loads(out)] == [(str(tmp_path / "a.h5"), 8)]
    status, out, _ = run_report(capsys, "summary", tmp_path, "--sort=-throughput", "--json", "-")
    rates = [row["throughput_samples_per_s"] for row in json.loads(out)]
    assert len(rates) == 3 and rates == sorted(rates, reverse=True)
    status, _, err = run_report(capsys, "summary", tmp_path, "--sort", "speed")
    assert status == 2 and err.count("\n") == 1 and "unknown key 'speed'" in err
    status, _, err = run_report(capsys, "summary", tmp_path / "nothere")
    assert status == 2 and "no such file or folder" in err


def test_csv_and_json_carry_units_and_the_stored_numbers(sweep_folder, tmp_path, capsys):
    status, out, _ = run_report(capsys, "summary", sweep_folder, "--json", "-")
    assert status == 0
    rows = json.loads(out)  # stdout holds only the JSON; skipped files went to stderr
    assert len(rows) == 4
    for column in ("throughput_samples_per_s", "throughput_ci95_low_samples_per_s", "latency_p50_ms",
                   "latency_p99_ci95_high_ms", "created_utc", "git_commit", "hosts", "valid", "validity_reason"):
        assert column in rows[0]
    by_file = {row["file"]: row for row in rows}
    with h5py.File(sweep_folder / "week1" / "bs8.h5") as h5:
        attrs = h5["runs/bs00008"].attrs
        row = by_file[str(sweep_folder / "week1" / "bs8.h5")]
        assert row["throughput_samples_per_s"] == pytest.approx(attrs["throughput"])
        assert row["latency_p50_ci95_low_ms"] == pytest.approx(attrs["latency_p50_ci95_low"])
        if "latency_p99_ci95_low" not in attrs:  # too few latencies for a p99 interval: null, not a number
            assert row["latency_p99_ci95_low_ms"] is None
    assert by_file[str(sweep_folder / "stalled.h5")]["valid"] is False
    csv_path = tmp_path / "summary.csv"
    assert run_report(capsys, "summary", sweep_folder, "--csv", csv_path)[0] == 0
    header = csv_path.read_text().splitlines()[0].split(",")
    assert header[:3] == ["file", "run", "model"] and "latency_p50_ms" in header
    assert len(csv_path.read_text().splitlines()) == 5


def test_the_table_reads_no_dataset(sweep_folder, monkeypatch):
    """The table comes from attributes alone: any dataset read (the step arrays) would fail here."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("a dataset was read")

    monkeypatch.setattr(h5py.Dataset, "__getitem__", refuse)
    monkeypatch.setattr(h5py.Dataset, "read_direct", refuse)
    found = summary_module.read_summary([sweep_folder])
    assert len(found.runs) == 4 and len(found.skipped) == 2


def _trend_folder(folder, slowdowns, invalid_at=None):
    """One configuration (resnet18 batch 8) run once a day, commit c0, c1, ...; slowdown scales its step time."""
    folder.mkdir(exist_ok=True)
    for day, slowdown in enumerate(slowdowns):
        write_result_file(folder / f"day{day}.h5", batch_sizes=(8,), slowdown=slowdown, seed=day,
                          created=f"2026-11-{day + 10:02d}T09:00:00+00:00", git_commit=f"c{day}" + "0" * 38,
                          invalid_reasons=("too short",) if day == invalid_at else ())
    return folder


def _trend(out):
    return [(row["file"].rsplit("/", 1)[-1], row["trend"]) for row in json.loads(out)]


def test_trend_marks_a_20_percent_slower_third_run_regressed(tmp_path, capsys):
    folder = _trend_folder(tmp_path / "trend", (1.0, 1.0, 1.2))
    for by in ("created", "commit"):
        status, out, _ = run_report(capsys, "summary", folder, "--by", by, "--sort", "created", "--json", "-")
        assert status == 0
        assert _trend(out) == [("day0.h5", "first"), ("day1.h5", "same"), ("day2.h5", "regressed")]
    row = json.loads(out)[-1]
    assert row["trend_ratio"] == pytest.approx(1.2, rel=0.05) and row["trend_base"].endswith("day1.h5:bs00008")
    status, out, _ = run_report(capsys, "summary", folder, "--by", "created")
    assert re.search(r"REGRESSED 1\.(1[5-9]|2[0-5])\dx, per-rank time per sample", out)
    assert "trend: resnet18 32.32, Test CPU, 1 rank(s), batch 8" in out
    # compare applies the same rule to the same pair
    assert run_report(capsys, "compare", folder / "day1.h5", folder / "day2.h5")[0] != 0


def test_trend_steps_over_an_invalid_run(tmp_path, capsys):
    folder = _trend_folder(tmp_path / "trend", (1.0, 1.5, 1.0), invalid_at=1)
    status, out, _ = run_report(capsys, "summary", folder, "--by", "created", "--sort", "created", "--json", "-")
    rows = json.loads(out)
    assert status == 0 and rows[1]["trend"] != "regressed"  # the INVALID run decides nothing
    assert rows[2]["trend"] == "same" and rows[2]["trend_base"].endswith("day0.h5:bs00008")


class PageParser(HTMLParser):
    """Collects the summary table's rows, figures by class, links, scripts and outside references."""

    def __init__(self):
        super().__init__()
        self.in_table = False
        self.table_rows = 0
        self.figures = {}
        self.anchors, self.links, self.scripts, self.outside = set(), [], 0, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id") == "summary":
            self.in_table = True
        if tag == "tr" and self.in_table:
            self.table_rows += 1
        if tag == "figure":
            self.figures[attrs.get("class")] = self.figures.get(attrs.get("class"), 0) + 1
        if tag == "script":
            self.scripts += 1
        if attrs.get("id"):
            self.anchors.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        for key in ("src", "href"):
            if attrs.get(key) and not (attrs[key].startswith("#") or attrs[key].startswith("data:image/svg+xml")):
                self.outside.append(attrs[key])

    def handle_endtag(self, tag):
        if tag == "table":
            self.in_table = False


def test_html_page_is_self_contained_with_table_sweeps_trends_and_histograms(sweep_folder, tmp_path, capsys):
    write_result_file(sweep_folder / "week1" / "other-model.h5", batch_sizes=(1, 8), model="efficientnet-b0")
    _trend_folder(sweep_folder / "trend", (1.0, 1.0, 1.2))
    page_path = tmp_path / "summary.html"
    status, out, _ = run_report(capsys, "summary", sweep_folder, "--html", page_path, "--by", "created")
    assert status == 0 and f"page written to {page_path}" in out
    parser = PageParser()
    parser.feed(page_path.read_text(encoding="utf-8"))
    runs = 4 + 2 + 3
    assert parser.table_rows == 1 + runs  # header + one per run
    assert parser.figures.get("sweep") == 2  # resnet18 and efficientnet-b0 on the same CPU, 1 rank
    assert parser.figures.get("histogram") == runs
    assert parser.figures.get("trend") == 1  # resnet18 batch 8 has three runs
    assert {f"run-{index}" for index in range(runs)} <= parser.anchors
    assert {f"#run-{index}" for index in range(runs)} <= set(parser.links)
    assert parser.scripts == 0 and parser.outside == []
    text = page_path.read_text(encoding="utf-8")
    assert "INVALID: step cv 12.0% on rank 0 &gt; 10%; too short" in text  # the INVALID run's block
    assert "throughput: " in text and "latency avg: " in text  # the runner's block of each run


def test_500_files_summarise_in_under_10_seconds(tmp_path, capsys):
    folder = tmp_path / "many"
    folder.mkdir()
    models = ("resnet18", "resnet50", "efficientnet-b0", "efficientnet-b4")
    for index in range(500):
        write_result_file(folder / f"run{index:03d}.h5", batch_sizes=(2 ** (index % 4),), model=models[index % 4],
                          created=f"2026-11-{1 + index % 28:02d}T{index % 24:02d}:00:00+00:00", steps=20)
    started = time.perf_counter()
    status, out, _ = run_report(capsys, "summary", folder, "--csv", tmp_path / "all.csv")
    seconds = time.perf_counter() - started
    assert status == 0 and len(table_lines(out)) == 500
    assert seconds < 10.0, f"500 files took {seconds:.1f} s"
    with open(tmp_path / "all.csv", newline="") as handle:
        rates = [float(row["throughput_samples_per_s"]) for row in csv.DictReader(handle)]
    assert len(rates) == 500 and np.isfinite(rates).all() and min(rates) > 0


def test_histogram_svg_draws_a_bar_per_filled_bin_and_both_percentiles():
    from xml.etree import ElementTree

    from mpirunner.report.html import histogram_svg

    counts = np.array([3, 0, 10, 5, 0, 1])
    edges = np.logspace(-3, -2, counts.size + 1)  # 1 ms .. 10 ms
    svg = ElementTree.fromstring(histogram_svg("a <run>", counts, edges, {"latency_p50": 2.5, "latency_p99": 8.0}))
    namespace = "{http://www.w3.org/2000/svg}"
    bars = [rect for rect in svg.iter(f"{namespace}rect") if rect.get("fill") == "#aaa"]
    heights = [float(bar.get("height")) for bar in bars]
    assert len(bars) == 4 and heights.index(max(heights)) == 1  # the bin of 10 is the tallest
    texts = [text.text for text in svg.iter(f"{namespace}text")]
    assert "a <run>" in texts and "p50 2.500 ms" in texts and "p99 8.000 ms" in texts


def test_fail_on_regression_gates_on_each_configurations_latest_run(tmp_path, capsys):
    regressed = _trend_folder(tmp_path / "regressed", (1.0, 1.0, 1.2))
    status, out, err = run_report(capsys, "summary", regressed, "--by", "created", "--fail-on-regression")
    assert status == 1 and "trend: resnet18 32.32, Test CPU, 1 rank(s), batch 8" in out
    (line,) = err.strip().splitlines()
    assert line.startswith("regressed: resnet18 32.32, Test CPU, 1 rank(s), batch 8: ") and "day2.h5:bs00008" in line
    assert run_report(capsys, "summary", regressed, "--by", "created")[0] == 0  # no gate without the flag
    # a regression that a later run recovered from is history: the latest step decides
    recovered = _trend_folder(tmp_path / "recovered", (1.0, 1.2, 1.2))
    assert run_report(capsys, "summary", recovered, "--by", "created", "--fail-on-regression")[0] == 0
    invalid = _trend_folder(tmp_path / "invalid", (1.0, 1.0, 1.0), invalid_at=2)
    status, _, err = run_report(capsys, "summary", invalid, "--by", "created", "--fail-on-regression")
    assert status == 6 and err.startswith("invalid-new: ")
    status, _, err = run_report(capsys, "summary", regressed, "--fail-on-regression")
    assert status == 2 and "add --by commit or --by created" in err
