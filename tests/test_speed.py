"""CPU speed plumbing: FLOPs counted by FlopCounterMode, utilisation arithmetic, --measure-peak, fast --help."""
import subprocess
import sys

import h5py
import pytest
import torch

from mpirunner.flops import count_flops_per_sample, utilization_attrs
from tests.conftest import REPO, run_cli


def test_flops_of_a_known_network():
    conv = torch.nn.Conv2d(3, 8, kernel_size=3, padding=1, bias=False)
    network = torch.nn.Sequential(conv, torch.nn.Flatten(), torch.nn.Linear(8 * 16 * 16, 10, bias=False))
    expected = 2 * (8 * 16 * 16) * (3 * 3 * 3) + 2 * (8 * 16 * 16) * 10
    assert count_flops_per_sample(network, 16, torch.float32) == expected


def test_utilization_is_summed_per_host():
    attrs = utilization_attrs(flops_per_sample=10.0, throughput=5.0, rank_throughputs=[2.0, 3.0, 4.0],
                              rank_hosts=["a", "a", "b"], rank_peaks=[100.0, 100.0, 40.0])
    assert attrs["achieved_flops"] == 50.0
    assert attrs["peak_flops"] == 240.0
    assert attrs["utilization"] == pytest.approx(90.0 / 240.0)
    assert attrs["utilization_per_host"] == [pytest.approx(50.0 / 200.0), pytest.approx(40.0 / 40.0)]
    assert "utilization" not in utilization_attrs(10.0, 5.0, [5.0], ["a"])


def test_run_stores_flops_and_measured_peak(tmp_path, tiny_args):
    output = tmp_path / "peak.h5"
    result = run_cli([*tiny_args, "--batch-size", "2", "--iterations", "3", "--measure-peak", "--output", output])
    assert result.returncode == 0, result.stderr
    with h5py.File(output) as h5:
        run = h5["runs/bs00002"].attrs
        resnet18_flops_at_32px = count_flops_per_sample(
            __import__("torchvision").models.resnet18(), 32, torch.float32)
        assert abs(run["flops_per_sample"] - resnet18_flops_at_32px) / resnet18_flops_at_32px < 0.01
        assert run["achieved_flops"] == pytest.approx(run["throughput"] * run["flops_per_sample"])
        assert run["peak_flops"] > 1e9
        assert 0 < run["utilization"] < 2
        assert h5["ranks"]["gemm_peak_flops"][0] == pytest.approx(run["peak_flops"])
    assert "FLOP/s" in result.stdout and "utilisation" in result.stdout


@pytest.mark.parametrize("argv", [["--help"], ["--batch-size", "0"], ["--config", "nope"]])
def test_help_and_config_errors_do_not_import_torch(argv):
    code = ("import sys\nfrom mpirunner.cli import main\n"
            "try:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')" % (argv,))
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.stdout.strip().splitlines()[-1] == "NO-TORCH"
