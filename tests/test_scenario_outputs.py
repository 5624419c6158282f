"""One meaning per column (issue 28): for a server run and a peak search made by real small runs (resnet18 at
32 px, one rank on the CPU), the runner's printed block, mpirunner-report's text, CSV and JSON, the summary
(text and JSON) and the summary's page show the same achieved rate and query latencies, digit for digit.

What is asserted holds whatever the machine's load: agreement between the outputs of the same file, never a
verdict or a timing."""
import csv
import html
import io
import json
import re

import pytest

from conftest import run_cli
from mpirunner import stats

pytestmark = pytest.mark.filterwarnings("ignore")

MODEL = ["--model", "resnet18", "--image-size", "32", "--device", "cpu", "--no-progress", "--threads", "1"]
SERVER = ["--scenario", "server", "--batch-size", "2", "--target-qps", "40", "--min-duration", "3"]
# judged on a p90 (points of 4 x 44 queries: a short search); its p99 is n/a everywhere, which must agree too
PEAK = ["--find-peak-qps", "--latency-bound", "1000", "--percentile", "90", "--batch-size", "2", "--min-duration", "1",
        "--target-qps", "40"]

BLOCK = re.compile(r"^(?:server|single-stream): (?P<queries>\d+) queries, query latency ms: p50 (?P<p50>\S+).*?"
                   r"p90 (?P<p90>\S+).*?p99 (?P<p99>\S+).*?mean (?P<mean>\S+)$", re.M)
LOAD = re.compile(r"^load: target (?P<target>\S+) QPS, offered (?P<offered>\S+) \(as scheduled\), achieved "
                  r"(?P<achieved>[^,\s]+), keep-up ", re.M)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """{kind: (path, runner stdout)} of one server run and one peak search."""
    folder = tmp_path_factory.mktemp("scenario-outputs")
    made = {}
    for kind, args in (("server", SERVER), ("peak", PEAK)):
        path = folder / f"{kind}.h5"
        result = run_cli([*MODEL, *args, "--output", path], timeout=600)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        made[kind] = (path, result.stdout)
    return made


def printed_points(stdout):
    """Each run block of the runner's output, in the order measured: its printed numbers as text."""
    points = []
    for block in stdout.split("\n== ")[1:]:
        query, load = BLOCK.search(block), LOAD.search(block)
        throughput = re.search(r"^throughput: (\S+) samples/sec$", block, re.M).group(1)
        mean = re.search(r"^latency avg: (\S+) ms$", block, re.M).group(1)
        points.append({"throughput": throughput, "latency_avg": mean, **query.groupdict(), **load.groupdict()})
    return points


def report_json(path, *extra):
    result = run_cli([path, "--json", "-", *extra], module="mpirunner.report")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def measured_order(path):
    from mpirunner.runfile.hdf5 import load_job

    runs = load_job(path).measured_runs
    return [run.name for run in sorted(runs, key=lambda run: run.scenario.peak_point or 0)]


def shown(value, spec):
    return "n/a" if value is None else f"{value:{spec}}"


@pytest.mark.parametrize("kind", ["server", "peak"])
def test_the_runner_the_report_the_summary_and_the_page_show_the_same_rate_and_query_latency(files, kind, tmp_path):
    path, stdout = files[kind]
    printed = printed_points(stdout)
    order = measured_order(path)
    assert len(printed) == len(order) >= (1 if kind == "server" else 2)

    rows = {row["run"]: row for row in report_json(path)}
    csv_text = run_cli([path, "--csv", "-"], module="mpirunner.report")
    csv_rows = {row["run"]: row for row in csv.DictReader(io.StringIO(csv_text.stdout))}
    text = run_cli([path], module="mpirunner.report").stdout
    summary = {row["run"]: row for row in report_json_summary(path)}
    summary_text = run_cli(["summary", path], module="mpirunner.report").stdout
    page_path = tmp_path / "page.html"
    assert run_cli(["summary", path, "--html", page_path], module="mpirunner.report").returncode == 0
    page = html.unescape(page_path.read_text())

    for name, point in zip(order, printed):
        row, flat, in_summary = rows[name], csv_rows[name], summary[name]
        # the achieved rate: the runner's `throughput:` line is it in samples/s (one sample per server query)
        assert point["throughput"] == f"{row['throughput_samples_per_s']:.2f}" == f"{row['achieved_qps']:.2f}"
        assert point["achieved"] == f"{row['achieved_qps']:.1f}" == f"{in_summary['achieved_qps']:.1f}"
        assert point["target"] == f"{row['offered_qps_target']:.1f}" == f"{in_summary['offered_qps_target']:.1f}"
        assert point["offered"] == f"{row['offered_qps_scheduled']:.1f}"
        assert "throughput_reference_samples_per_s" not in row  # never a third number for a scenario run
        # query latency: the runner's `latency avg:` is the query mean; percentiles by the one rule
        assert point["latency_avg"] == f"{row['query_latency_mean_ms']:.3f}" == point["mean"]
        for q in (50, 90, 99):
            value = row[f"query_latency_p{q}_ms"]
            assert point[f"p{q}"] == shown(value, ".3f"), q
            assert in_summary.get(f"query_latency_p{q}_ms") == value
            assert (flat[f"query_latency_p{q}_ms"] == "") == (value is None)
            if value is not None:
                assert float(flat[f"query_latency_p{q}_ms"]) == pytest.approx(value, rel=1e-12)
            if row["queries"] < stats.minimum_count(q):
                assert value is None
        assert float(flat["throughput_samples_per_s"]) == pytest.approx(row["throughput_samples_per_s"], rel=1e-12)
        assert in_summary["throughput_samples_per_s"] == pytest.approx(row["throughput_samples_per_s"], rel=1e-12)
        # the report's scenario table row and the summary's loads cell, as printed
        cells = f"{row['offered_qps_target']:.1f}  {row['offered_qps_scheduled']:.1f}  {row['achieved_qps']:.1f}"
        assert re.search(r"\b" + r"\s+".join(map(re.escape, cells.split("  "))) + r"\s+" +
                         re.escape(point["throughput"]) + r"\s+" + re.escape(point["p50"]), text), (cells, text)
        assert f"{point['target']} / {point['offered']} / {in_summary['achieved_qps']:.1f}" in summary_text
        # the page shows the runner's block itself
        assert f"throughput: {point['throughput']} samples/sec" in page
        assert f"latency avg: {point['latency_avg']} ms" in page
    if kind == "peak":  # the peak and its interval, as every point stores it and the runner's last line says it
        (peak,) = {(row["peak_qps"], row["peak_qps_high"]) for row in rows.values()}
        if peak[0] is None:
            assert "no load" in stdout
        else:
            shown_peak = (f"[{peak[0]:.1f}, {peak[1]:.1f}] QPS" if peak[1] is not None and peak[1] > peak[0]
                          else f"{peak[0]:.1f} QPS")
            assert f"peak search: {'the peak lies in ' if '[' in shown_peak else 'peak '}{shown_peak}" in text
            assert f"{peak[0]:.1f} QPS in total" in stdout and (f"[{peak[0]:.1f}, {peak[1]:.1f}] QPS" in stdout
                                                              or "[" not in shown_peak)


def report_json_summary(path):
    result = run_cli(["summary", path, "--json", "-"], module="mpirunner.report")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
