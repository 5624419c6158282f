"""A roof measured under load (--measure-peak) is broken: the run beats it. No utilisation above 100% is
ever stored, printed or tabled; the run says the roof was measured under load and how to measure it again."""
import json
import re

import h5py
import pytest

from mpirunner.roofline import Roofs, broken_roof, roof_attrs
from tests.conftest import run_cli

LOW_ROOF_RUNNER = '''
import sys

from mpirunner import peak

# a roof timed while other work took the CPUs: 1 MFLOP/s and 1 MB/s, far below what the run reaches
peak.measure_roofs = lambda dtype, device="cpu": {
    "gemm_peak_flops": 1e6, "peak_flops": 1e6, "peak_flops_median": 0.5e6, "peak_flops_batches": 3,
    "peak_memory_bandwidth": 1e6, "peak_memory_bandwidth_median": 0.5e6, "peak_memory_bandwidth_batches": 3}
from mpirunner.cli import main  # noqa: E402

sys.exit(main())
'''

UNDER_LOAD = "roof measured under load (utilisation would be"
PERCENT = re.compile(r"utilisation (?!would)[^%]*?([0-9.]+)%")


def _shown_utilisations(text):
    """Every percentage printed as a utilisation (not the 'would be' of a broken roof)."""
    return [float(value) for value in PERCENT.findall(text)]


def test_a_share_above_one_is_a_broken_roof_not_a_utilisation():
    roofs = Roofs(peak_flops=[1e9, 1e9], peak_memory_bandwidth=[1e12, 1e12], weight_bytes=0,
                  activation_bytes_per_sample=1000)
    compute = {"flops_per_sample": 10**6, "achieved_flops": 2.6e9, "peak_flops": 2e9, "utilization": 1.3,
               "utilization_hosts": ["a"], "utilization_per_host": [1.3]}
    compute.update(roof_attrs(10**6, 2.6e9, ["a", "a"], roofs, batch_size=8))
    judged = broken_roof(compute)
    assert judged["roof_broken"] is True and judged["achieved_over_roof"] == pytest.approx(1.3)
    assert not [key for key in judged if "utiliz" in key]
    assert judged["peak_flops"] == 2e9 and judged["roof_flops"] == pytest.approx(2e9)  # the roofs stay, as measured
    fine = dict(compute, utilization=0.4, utilization_per_host=[0.4], roof_utilization=0.4)
    assert broken_roof(fine) is fine  # below the roof: untouched


def test_a_run_that_beats_its_measured_roof_never_stores_or_prints_a_utilisation_above_one(tmp_path, tiny_args):
    (tmp_path / "low_roof_runner.py").write_text(LOW_ROOF_RUNNER)
    output = tmp_path / "low-roof.h5"
    result = run_cli([*tiny_args, "--batch-size", "2", "--iterations", "3", "--measure-peak", "--output", output],
                     module="low_roof_runner", env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert UNDER_LOAD in result.stdout and "rerun --measure-peak on a quiet machine" in result.stdout
    assert not [share for share in _shown_utilisations(result.stdout) if share > 100], result.stdout
    with h5py.File(output) as h5:
        attrs = dict(h5["runs/bs00002"].attrs)
        assert h5["ranks"]["peak_flops_median"][0] == 0.5e6
    assert not [key for key in attrs if "utiliz" in key], sorted(attrs)
    assert bool(attrs["roof_broken"]) and attrs["achieved_over_roof"] > 1

    report = run_cli([output], module="mpirunner.report")
    assert report.returncode == 0, report.stderr
    assert UNDER_LOAD in report.stdout
    assert not [share for share in _shown_utilisations(report.stdout) if share > 100], report.stdout
    rows = json.loads(run_cli([output, "--json", "-"], module="mpirunner.report").stdout)
    csv_text = run_cli([output, "--csv", "-"], module="mpirunner.report").stdout
    assert rows and not [key for key in rows[0] if "utiliz" in key and rows[0][key] not in (None, "")]
    assert "utiliz" not in csv_text.splitlines()[0]
    summary = run_cli(["summary", output], module="mpirunner.report")
    assert summary.returncode == 0, summary.stderr
    header, line = summary.stdout.splitlines()[:2]
    util = line[header.index("util %"):].split()[0]
    assert util == "-", summary.stdout


def test_an_older_file_with_a_utilisation_above_one_reads_as_a_broken_roof(tmp_path, tiny_args):
    output = tmp_path / "older.h5"
    result = run_cli([*tiny_args, "--batch-size", "2", "--iterations", "3", "--measure-peak", "--output", output])
    assert result.returncode == 0, result.stderr
    with h5py.File(output, "r+") as h5:  # as an earlier version stored a roof measured under load
        attrs = h5["runs/bs00002"].attrs
        attrs["utilization"], attrs["roof_utilization"], attrs["utilization_per_host"] = 1.3, 1.25, [1.3]
        attrs["utilization_percent"], attrs["roof_utilization_percent"] = 130.0, 125.0  # the unit-named twins
        attrs["utilization_per_host_percent"] = [130.0]
    report = run_cli([output], module="mpirunner.report")
    assert "roof measured under load (utilisation would be 130%)" in report.stdout, report.stdout
    assert not [share for share in _shown_utilisations(report.stdout) if share > 100], report.stdout
    rows = json.loads(run_cli([output, "--json", "-"], module="mpirunner.report").stdout)
    assert not [key for key in rows[0] if "utiliz" in key and rows[0][key] not in (None, "")], rows[0]
    assert rows[0]["roof_broken"] is True
    assert rows[0]["achieved_over_roof"] == pytest.approx(1.3)
