"""mpirunner-report as a user runs it: tables, histograms, plots, CSV/JSON and compare, from HDF5 files alone.

Most files are written directly with results.write_results from generated timings (fast, no model);
one test reads what a real tiny run writes.
"""
import csv
import json
import math
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest

from mpirunner import report, stats
from mpirunner.report import rows as report_rows, text as report_text
from mpirunner.runfile import block as runner_text, sweep as runner_sweep
from mpirunner.runfile.plain import RunResult, write_results
from mpirunner.runfile.names import exported
from tests.conftest import REPO, TINY, run_cli


def make_timings(rng, ranks, steps, step_ms=10.0, scale=1.0, slow_rank=None):
    """Lognormal step times [ranks, steps] (s) and their starts, as the runner would gather them."""
    seconds = rng.lognormal(np.log(step_ms / 1e3), 0.1, size=(ranks, steps)) * scale
    if slow_rank is not None:
        seconds[slow_rank] *= 1.5
    starts = np.concatenate([np.zeros((ranks, 1)), np.cumsum(seconds, axis=1)[:, :-1]], axis=1)
    starts += rng.uniform(0, 1e-4, size=(ranks, 1))  # ranks leave the barrier at slightly different times
    return seconds, starts


def make_file(path, batch_sizes=(4,), ranks=2, steps=40, scale=1.0, seed=0, slow_rank=None,
              rank_rows=None, root_extra=None, run_extra=None):
    """A results file with generated timings; step = one micro-batch, so batch_latency = step_seconds."""
    rng = np.random.default_rng(seed)
    runs = []
    for batch_size in batch_sizes:
        seconds, starts = make_timings(rng, ranks, steps, step_ms=2.0 * batch_size + 5, scale=scale,
                                       slow_rank=slow_rank)
        attrs = {"batch_size": batch_size, "device_iterations": 1, "samples_per_step": batch_size,
                 "model": "resnet18", "precision": "32.32", "dtype": "float32", "data": "generated",
                 "iterations": steps, "warmup": 1, "valid": True, "validity_reason": "",
                 **stats.summarize(starts, seconds, seconds, batch_size), **(run_extra or {})}
        counts, edges = stats.log_histogram(seconds)
        runs.append(RunResult(name=f"bs{batch_size:05d}", attrs=attrs, step_seconds=seconds, step_start=starts,
                              batch_latency=seconds.copy(), compile_seconds=rng.uniform(1, 2, ranks),
                              extra_datasets={"histogram/counts": counts, "histogram/edges": edges}))
    if rank_rows is None:
        rank_rows = [{"rank": r, "host": f"node{r // 2}", "local_rank": r % 2, "numa_node": r % 2,
                      "cpus": f"{8 * r}-{8 * r + 7}", "device": "cpu"} for r in range(ranks)]
    root = {"mpirunner_version": "0.1.0", "created": "2026-11-29T12:00:00+00:00", "world_size": ranks,
            "hosts": sorted({row["host"] for row in rank_rows}), "backend": "cpu", "device_name": "Test CPU",
            "dtype": "float32", **(root_extra or {})}
    return write_results(path, root, rank_rows, runs)


def run_report(capsys, *argv):
    """main(argv) in process: (exit status, stdout, stderr)."""
    status = report.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def table_row(out, batch_size):
    """The numbers of the table row of one batch size."""
    for line in out.splitlines():
        cells = line.split()
        if len(cells) == 13 and cells[0] == str(batch_size) and cells[-1] in ("yes", "NO"):
            return [float("nan") if cell == "n/a" else float(cell) for cell in cells[:-1]]
    raise AssertionError(f"no table row for batch {batch_size} in:\n{out}")


def test_table_matches_numpy_on_the_stored_arrays(tmp_path, capsys):
    path = make_file(tmp_path / "sweep.h5", batch_sizes=(1, 4, 16), ranks=3, steps=30)
    status, out, _ = run_report(capsys, path)
    assert status == 0
    assert "model resnet18, precision 32.32 (float32)" in out
    assert "backend cpu on Test CPU, 3 rank(s) on node0, node1" in out
    with h5py.File(path) as h5:
        for name in h5["runs"]:
            run = h5["runs"][name]
            seconds, starts = run["step_seconds"][()], run["step_start"][()]
            latency_ms = run["batch_latency"][()].ravel() * 1e3
            batch = int(run.attrs["batch_size"])
            expected_throughput = batch * seconds.size / ((starts + seconds).max() - starts.min())
            per_rank = batch * seconds.shape[1] / ((starts + seconds).max(axis=1) - starts.min(axis=1))
            row = table_row(out, batch)
            assert row[:2] == [batch, batch]
            assert row[2] == pytest.approx(expected_throughput, abs=0.006)
            assert row[3] == pytest.approx(per_rank.sum(), abs=0.006)
            # 90 latencies: p99 (needs 459) and p99.9 (needs 4603) are n/a (stats.minimum_count)
            expected_ms = [latency_ms.min(), latency_ms.mean(), *np.percentile(latency_ms, [50, 90]),
                           float("nan"), float("nan"), latency_ms.max()]
            assert row[4:11] == pytest.approx(expected_ms, abs=6e-4, nan_ok=True)
            per_rank_cv = [100 * rank.std(ddof=1) / rank.mean() for rank in seconds]
            assert row[11] == pytest.approx(max(per_rank_cv), abs=0.06)
    batches = [int(line.split()[0]) for line in out.splitlines() if line.split() and line.split()[-1] == "yes"]
    assert batches == [1, 4, 16]


def test_ranks_names_hosts_numa_and_the_straggler(tmp_path, capsys):
    path = make_file(tmp_path / "four.h5", ranks=4, slow_rank=2)
    status, out, _ = run_report(capsys, "report", path, "--ranks")
    assert status == 0
    rank_lines = [line.split() for line in out.splitlines() if line.split()[:1] in (["0"], ["1"], ["2"], ["3"])
                  and "node" in line]
    assert [cells[:4] for cells in rank_lines] == [["0", "node0", "0", "0-7"], ["1", "node0", "1", "8-15"],
                                                   ["2", "node1", "0", "16-23"], ["3", "node1", "1", "24-31"]]
    slowest = [cells[0] for cells in rank_lines if "slowest" in cells]
    assert slowest == ["2"]
    with h5py.File(path) as h5:
        seconds = h5["runs/bs00004/step_seconds"][()]
        starts = h5["runs/bs00004/step_start"][()]
    expected = 4 * seconds.shape[1] / ((starts + seconds).max(axis=1) - starts.min(axis=1))
    assert [float(cells[4]) for cells in rank_lines] == pytest.approx(expected, abs=0.006)


def test_terminal_histogram_counts_every_latency_and_marks_percentiles(tmp_path, capsys):
    path = make_file(tmp_path / "one.h5", ranks=2, steps=300)
    status, out, _ = run_report(capsys, path, "--histogram")
    assert status == 0
    bins = [line for line in out.splitlines() if " |" in line]
    counts = [int(line.split("|")[1][50:].split()[0]) for line in bins]  # after the 50-character bar
    assert sum(counts) == 600
    assert "600 micro-batches" in out
    for marker, times in (("p50", 1), ("p90", 1), ("p99", 1), ("p99.9", 0)):  # 600 latencies: too few for a p99.9
        assert sum(marker in line.split("<-")[-1].strip().split(", ") for line in bins if "<-" in line) == times, marker
    # the p50 marker sits on the bin holding the median
    median_ms = np.median(h5py.File(path)["runs/bs00004/batch_latency"][()]) * 1e3
    p50_line = next(line for line in bins if "<-" in line and "p50" in line.split("<-")[1].strip().split(", "))
    low, high = (float(value) for value in p50_line.split("|")[0].split(" - "))
    assert low <= median_ms <= high


def test_histogram_bin_counts_sum_to_the_latencies():
    rng = np.random.default_rng(3)
    latency = np.concatenate([rng.lognormal(np.log(0.01), 0.05, 500), [0.5, 2.0]])  # two far outliers
    text = report_text.terminal_histogram(latency)
    counts = [int(line.split("|")[1][50:].split()[0]) for line in text.splitlines() if " |" in line]
    assert sum(counts) == latency.size
    assert "empty bins" in text  # the gap before the outliers is one row, not dozens


def test_plot_single_run_is_a_png_of_the_expected_size(tmp_path, capsys):
    from PIL import Image

    path = make_file(tmp_path / "one.h5", ranks=3)
    png = tmp_path / "hist.png"
    status, out, _ = run_report(capsys, path, "--plot", png, "--ranks")
    assert status == 0 and f"plot written to {png}" in out
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (1200, 500)
        colours = len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0))
    assert colours > 20  # something was drawn


def test_plot_sweep_of_two_files(tmp_path, capsys):
    from PIL import Image

    base = make_file(tmp_path / "base.h5", batch_sizes=(1, 2, 4, 8))
    new = make_file(tmp_path / "new.h5", batch_sizes=(1, 2, 4, 8), scale=1.3, seed=1)
    png = tmp_path / "sweep.png"
    status, _, _ = run_report(capsys, base, new, "--plot", png)
    assert status == 0
    with Image.open(png) as image:
        assert image.size == (1200, 500)


def test_csv_and_json_round_trip(tmp_path, capsys):
    path = make_file(tmp_path / "sweep.h5", batch_sizes=(2, 8), run_extra={"utilization_hosts": ["a", "b"]})
    csv_path, json_path = tmp_path / "rows.csv", tmp_path / "rows.json"
    status, _, _ = run_report(capsys, path, "--csv", csv_path, "--json", json_path)
    assert status == 0
    with open(csv_path, newline="") as handle:
        csv_rows = list(csv.DictReader(handle))
    json_rows = json.loads(json_path.read_text())
    assert [row["batch_size"] for row in json_rows] == [2, 8]
    assert len(csv_rows) == 2
    data = report_rows.load(path)
    for csv_row, json_row, name in zip(csv_rows, json_rows, report_rows.sorted_runs(data)):
        expected = exported(report_rows.summary_row(data, name))  # the export names carry units (units.py)
        assert list(csv_row) == list(json_row) == list(expected)
        for key, value in expected.items():
            if isinstance(value, bool):
                assert json_row[key] is value and csv_row[key] == str(value)
            elif isinstance(value, (int, float)):
                assert json_row[key] == pytest.approx(value) and float(csv_row[key]) == pytest.approx(value)
            elif value is None:  # a percentile with too few latencies: empty, never a number
                assert json_row[key] is None and csv_row[key] == ""
            else:
                assert json_row[key] == value and csv_row[key] == value
        assert json_row["latency_p50_ms"] == pytest.approx(np.percentile(name.arrays.batch_latency * 1e3, 50))
        assert json_row["latency_p99_ms"] is None  # 80 latencies: too few for a p99 (stats.minimum_count(99) = 459)
        assert json_row["utilization_hosts"] == csv_row["utilization_hosts"] == "a; b"


def test_compare_flags_timings_scaled_by_1_2(tmp_path, capsys):
    base = make_file(tmp_path / "base.h5", batch_sizes=(1, 8), seed=5)
    slower = make_file(tmp_path / "slower.h5", batch_sizes=(1, 8), seed=5, scale=1.2)
    status, out, _ = run_report(capsys, "compare", base, slower)
    assert status == 1
    assert out.count("REGRESSED") == 2 and "REGRESSION at batch size 1, 8" in out
    status, out, _ = run_report(capsys, "compare", base, slower, "--threshold", "25")
    assert status == 0 and "no regression" in out
    status, out, _ = run_report(capsys, "compare", slower, base)
    assert status == 0 and out.count("improved") == 2


def test_compare_does_not_flag_the_same_distribution(tmp_path, capsys):
    # 240 steps on 2 ranks: 480 latencies a side, enough for a p99 (stats.minimum_count(99) = 459)
    base = make_file(tmp_path / "base.h5", batch_sizes=(1, 4, 16), steps=240, seed=11)
    again = make_file(tmp_path / "again.h5", batch_sizes=(1, 4, 16), steps=240, seed=12)
    status, out, _ = run_report(capsys, "compare", base, again)
    assert status == 0, out
    assert "REGRESSED" not in out and "no regression" in out
    ratios = [float(line.split()[5].rstrip("x")) for line in out.splitlines() if line.endswith("% noise floor)")
              and " same (" in line]  # the p99 ratio of each row judged same
    assert len(ratios) == 3 and all(abs(ratio - 1) < 0.05 for ratio in ratios)
    # 80 latencies a side: the p99 ratio is n/a (the one percentile rule), the p50 ratio is still there
    few = [make_file(tmp_path / f"{name}.h5", batch_sizes=(4,), seed=seed) for name, seed in (("a", 1), ("b", 2))]
    status, out, _ = run_report(capsys, "compare", *few, "--json", tmp_path / "few.json")
    (row,) = [line.split() for line in out.splitlines() if line.split()[:1] == ["4"]]
    assert row[5] == "n/a" and float(row[4].rstrip("x")) == pytest.approx(1, abs=0.1)
    (result,) = json.loads((tmp_path / "few.json").read_text())
    assert result["p99_ratio"] is None and result["p50_ratio"] is not None


def test_compare_one_slow_batch_size_and_unmatched_runs(tmp_path, capsys):
    rng = np.random.default_rng(0)
    base = make_file(tmp_path / "base.h5", batch_sizes=(1, 2), seed=2)
    new = make_file(tmp_path / "new.h5", batch_sizes=(1, 2, 4), seed=3)
    with h5py.File(new, "r+") as h5:  # only batch 2 gets slower
        h5["runs/bs00002/step_seconds"][...] = h5["runs/bs00002/step_seconds"][()] * rng.uniform(1.3, 1.4)
    status, out, _ = run_report(capsys, "compare", base, new)
    assert status == 1
    verdicts = {line.split()[0]: line.split(" (")[0].split()[-1] for line in out.splitlines()
                if line.split()[:1] in (["1"], ["2"])}  # the verdict, before what decided it in brackets
    assert verdicts == {"1": "same", "2": "REGRESSED"}
    assert any(line.split() == ["4", "only", "in", "new"] for line in out.splitlines())


def test_compare_without_common_batch_size_is_a_usage_error(tmp_path, capsys):
    base = make_file(tmp_path / "base.h5", batch_sizes=(1,))
    new = make_file(tmp_path / "new.h5", batch_sizes=(2,))
    status, _, err = run_report(capsys, "compare", base, new)
    assert status == 2 and "no batch size in common" in err


def _bad_files(tmp_path):
    good = make_file(tmp_path / "good.h5")
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5 at all\n")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as h5:
        h5.create_dataset("x", data=np.arange(3))
    newer = make_file(tmp_path / "newer.h5")
    with h5py.File(newer, "r+") as h5:
        h5.attrs["schema"] = "mpirunner/2"
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return {text: "not a readable HDF5 file", foreign: "not an mpirunner results file",
            newer: "schema mpirunner/2 is newer than mpirunner/1", truncated: "truncated",
            tmp_path / "missing.h5": "no such file"}


def test_bad_files_exit_2_with_one_line(tmp_path, capsys):
    for path, message in _bad_files(tmp_path).items():
        status, out, err = run_report(capsys, path)
        assert status == 2, path
        assert err.count("\n") == 1 and message in err and str(path) in err, err
        status, _, err = run_report(capsys, "compare", tmp_path / "good.h5", path)
        assert status == 2 and message in err


def test_older_file_without_placement_columns_and_with_reasons(tmp_path, capsys):
    rank_rows = [{"rank": 0, "host": "a", "local_rank": 0, "device": "cpu"},
                 {"rank": 1, "host": "a", "local_rank": 1, "device": "cpu"}]
    path = make_file(tmp_path / "old.h5", rank_rows=rank_rows,
                     run_extra={"valid": False, "validity_reason": ["cv 12.0% > 10%", "only 4 steps"]})
    with h5py.File(path, "r+") as h5:
        del h5["runs/bs00004/histogram"]
        del h5.attrs["hosts"]
    status, out, _ = run_report(capsys, path, "--ranks", "--histogram")
    assert status == 0
    assert "batch 4: INVALID: cv 12.0% > 10%; only 4 steps" in out
    assert table_row(out, 4)[0] == 4 and " NO" in out
    rank_lines = [line.split() for line in out.splitlines() if line.split()[:2] in (["0", "a"], ["1", "a"])]
    assert [cells[2:4] for cells in rank_lines] == [["-", "-"], ["-", "-"]]


def test_ragged_ranks_padded_with_nan(tmp_path, capsys):
    path = make_file(tmp_path / "ragged.h5", ranks=2, steps=20)
    with h5py.File(path, "r+") as h5:  # rank 1 stopped 5 steps early: the gather pads with NaN
        for name in ("step_seconds", "step_start", "batch_latency"):
            data = h5[f"runs/bs00004/{name}"][()]
            data[1, 15:] = np.nan
            h5[f"runs/bs00004/{name}"][...] = data
    status, out, _ = run_report(capsys, path, "--json", "-")
    assert status == 0
    row = json.loads(out)[0]  # with --json -, stdout holds the JSON alone
    with h5py.File(path) as h5:
        seconds, starts = h5["runs/bs00004/step_seconds"][()], h5["runs/bs00004/step_start"][()]
    finite = np.isfinite(seconds)
    assert row["throughput_samples_per_s"] == pytest.approx(4 * finite.sum() / (np.nanmax(starts + seconds) - np.nanmin(starts)))
    assert row["latency_p50_ms"] == pytest.approx(np.median(seconds[finite]) * 1e3)
    assert all(math.isfinite(row[key]) for key in ("latency_max_ms", "throughput_sum_samples_per_s", "step_cv_percent"))


def test_intervals_and_flops_are_shown_when_present_and_absent_otherwise(tmp_path, capsys):
    extra = {"throughput_ci95": 2.5, "throughput_ci95_low": 97.5, "throughput_ci95_high": 102.5,
             "latency_p50_ci95": 0.25, "latency_p50_ci95_low": 9.75, "latency_p50_ci95_high": 10.25,
             "latency_p99_ci95": float("nan"), "latency_p99_ci95_low": float("nan"),
             "latency_p99_ci95_high": float("nan"),
             "flops_per_sample": 3_640_000_000, "achieved_flops": 1.5e12, "peak_flops": 6.0e12,
             "utilization": 0.25, "utilization_hosts": ["node0", "node1"], "utilization_per_host": [0.2, 0.3]}
    path = make_file(tmp_path / "new-fields.h5", run_extra=extra)
    status, out, _ = run_report(capsys, path)
    assert status == 0
    assert re.search(r"batch 4: 95% CI: throughput \d+\.\d\d \[97\.50, 102\.50\] samples/s, "
                     r"p50 \d+\.\d{3} \[9\.750, 10\.250\] ms, p99 n/a ms\n", out)  # 80 latencies: no p99
    assert ("batch 4: 3.640 GFLOP/sample, achieved 1.500 TFLOP/s, utilisation 25.0% of peak 6.000 TFLOP/s "
            "(node0 20.0%, node1 30.0%)") in out
    plain = make_file(tmp_path / "plain.h5")
    with h5py.File(plain, "r+") as h5:  # a file from before intervals existed
        for key in [key for key in h5["runs/bs00004"].attrs if "ci95" in key or key == "ci_unavailable"]:
            del h5["runs/bs00004"].attrs[key]
    status, out, _ = run_report(capsys, plain)
    assert status == 0 and "95% CI" not in out and "FLOP" not in out


def test_report_imports_neither_torch_nor_mpi4py(tmp_path):
    path = make_file(tmp_path / "one.h5")
    code = ("import sys; from mpirunner import report; "
            f"status = report.main([{str(path)!r}, '--ranks', '--histogram', '--json', '-', '--plot', "
            f"{str(tmp_path / 'p.png')!r}]); "
            f"status |= report.main(['compare', {str(path)!r}, {str(path)!r}]); "
            "print('LOADED', sorted(m for m in ('torch', 'mpi4py') if m in sys.modules), status)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "LOADED [] 0" in result.stdout


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """A real tiny sweep (batch sizes 1 and 2) run once for this module: (HDF5 path, the runner's stdout)."""
    output = tmp_path_factory.mktemp("real") / "real.h5"
    result = run_cli([*TINY, "--batch-size", "1,2", "--iterations", "4", "--output", output])
    assert result.returncode == 0, result.stderr
    return output, result.stdout


def test_reads_what_the_runner_writes(real_run):
    output, _ = real_run
    shown = run_cli([output, "--ranks", "--csv", "-"], module="mpirunner.report")
    assert shown.returncode == 0, shown.stderr
    rows = list(csv.DictReader(shown.stdout.splitlines()))
    with h5py.File(output) as h5:
        for row in rows:
            stored = h5["runs"][row["run"]].attrs
            assert float(row["throughput_samples_per_s"]) == pytest.approx(stored["throughput"], rel=1e-9)
            if stored["latency_count"] >= stats.minimum_count(99):
                assert float(row["latency_p99_ms"]) == pytest.approx(stored["latency_p99"], rel=1e-9)
            else:  # too few latencies for a p99: the export leaves it empty (the file keeps what it computed)
                assert row["latency_p99_ms"] == ""
    assert [row["batch_size"] for row in rows] == ["1", "2"]
    table = run_cli([output, "--ranks"], module="mpirunner.report")
    assert table.returncode == 0 and "model resnet18" in table.stdout
    assert table_row(table.stdout, 2)[2] == pytest.approx(float(rows[1]["throughput_samples_per_s"]), abs=0.006)
    compared = run_cli(["compare", output, output, "--include-invalid"], module="mpirunner.report")
    assert compared.returncode == 0 and "no regression" in compared.stdout
    valid = [bool(h5py.File(output)["runs"][row["run"]].attrs["valid"]) for row in rows]
    compared = run_cli(["compare", output, output], module="mpirunner.report")
    assert compared.returncode == (0 if all(valid) else 6), compared.stdout  # INVALID runs: not judged


def test_unwritable_outputs_exit_2_before_printing(tmp_path, capsys):
    path = make_file(tmp_path / "one.h5")
    status, out, err = run_report(capsys, path, "--plot", tmp_path / "missing" / "p.png")
    assert status == 2 and out == "" and "folder" in err and err.count("\n") == 1
    status, _, err = run_report(capsys, path, "--csv", tmp_path / "missing" / "rows.csv")
    assert status == 2 and "cannot write --csv" in err


def test_runner_block_and_table_reprinted_from_the_stored_attrs(real_run):
    output, printed = real_run
    data = report_rows.load(output)
    runs = [run.attrs() for run in report_rows.sorted_runs(data)]
    assert [attrs["batch_size"] for attrs in runs] == [1, 2]
    for attrs in runs:
        block = runner_text.format_run_block(attrs, data.world_size)
        assert block + "\n" in printed  # the runner printed exactly this, from the same numbers
        *_, throughput_line, latency_line = block.splitlines()
        # the reference harness's regexes read the last two lines
        assert float(re.search(r"throughput: *(.*?) samples\/sec", throughput_line).group(1)) == pytest.approx(
            attrs["throughput"], abs=0.005)
        assert float(re.search(r"latency avg: *(.*?) ms", latency_line).group(1)) == pytest.approx(
            attrs["latency_mean"], abs=0.0005)
        assert block.startswith(f"\n== resnet18 batch {attrs['batch_size']} x 1 device iterations, 1 rank(s)")
    from mpirunner.runfile.sweep import sweep_table

    table = sweep_table(runs)
    assert table + "\n" in printed
    assert [line.split()[:2] for line in table.splitlines()[2:4]] == [["1", "1"], ["2", "2"]]


def _block_attrs(**changes):
    """Run attributes with every field the runner's block reads (made-up numbers, chosen to read back)."""
    attrs = {"model": "resnet50", "batch_size": 8, "device_iterations": 2, "precision": "16.16", "dtype": "float16",
             "data": "generated", "latency_min": 1.0, "latency_p50": 2.0, "latency_p90": 3.0, "latency_p99": 4.0,
             "latency_max": 5.0, "latency_mean": 2.25, "compile_seconds_max": 12.5, "step_cv": 0.031,
             "host_gap_max": 0.0123, "device_busy_min": 0.975, "input_pool_steps": 3, "input_pool_bytes": 3 << 20,
             "throughput": 1234.5678, "throughput_ci95": 10.0, "latency_p50_ci95": 0.1, "latency_p99_ci95": 0.2,
             "iterations": 40, "timed_seconds": 0.52, "windows": 0, "achieved_flops": 5.0e12,
             "flops_per_sample": 4.1e9, "valid": True, "validity_reason": "", "throughput_sum": 1240.0,
             "samples_per_step": 16}
    attrs.update(changes)
    return attrs


def test_run_block_lines_for_invalid_runs_windows_peak_and_no_device_time():
    block = runner_text.format_run_block(
        _block_attrs(valid=False, validity_reason=["cv 12.0% > 10%", "only 4 steps"], windows=3,
                     device_busy_min=float("nan"), utilization=0.25, peak_flops=2.0e13), world_size=4)
    lines = block.splitlines()
    assert lines[0] == "" and lines[1] == ("== resnet50 batch 8 x 2 device iterations, 4 rank(s), 16.16 (float16), "
                                           "data generated")
    assert "device busy n/a (batch latency is not device time)" in lines[4]
    assert lines[4].startswith("input: host gap 1.23% of the window (worst rank)")
    assert lines[5].endswith("(40 steps, 0.52 s, 3 windows)")
    assert lines[6] == ("compute: 5000.0 GFLOP/s (4.100 GFLOP/sample), utilisation 25.0% of the measured GEMM peak "
                        "20000.0 GFLOP/s")
    assert lines[7] == "INVALID: cv 12.0% > 10%; only 4 steps"
    assert lines[-2:] == ["throughput: 1234.57 samples/sec", "latency avg: 2.250 ms"]
    valid = runner_text.format_run_block(_block_attrs(), world_size=1).splitlines()
    assert "device busy 97.5% (least busy rank)" in valid[4] and "windows" not in valid[5]
    assert valid[7] == "VALID" and "utilisation" not in valid[6]


def test_sweep_table_one_row_per_run_with_intervals_and_verdict():
    table = runner_sweep.sweep_table([_block_attrs(), _block_attrs(batch_size=16, samples_per_step=32,
                                                                   valid=False, validity_reason="too short")])
    lines = table.splitlines()
    assert lines[0] == "" and lines[1].split()[:2] == ["batch", "samples/step"]
    assert lines[2].split() == ["8", "16", "1234.57", "±", "10.00", "1240.00", "2.000", "±", "0.100", "4.000", "±",
                                "0.200", "3.1", "VALID"]
    assert lines[3].split()[:2] == ["16", "32"] and lines[3].endswith("INVALID (1)")
    assert lines[4:] == ["INVALID runs, why:", "  batch 16: too short"]
