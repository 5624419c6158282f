"""MPIRUNNER_FAULT=slow: a slower model, not a slower host. The wait is inside every forward pass, so it is
batch latency (device time), where `sleep` (before a step) is a host gap that makes a run input-bound."""
import h5py
import numpy as np

from conftest import run_cli


def _run(tmp_path, fault, name):
    output = tmp_path / f"{name}.h5"
    result = run_cli(["--model", "resnet18", "--image-size", "32", "--batch-size", "2", "--iterations", "6",
                      "--no-progress", "--output", output], env={"MPIRUNNER_FAULT": fault})
    assert result.returncode in (0, 3), result.stderr  # 3: --strict INVALID; never here is fine here, the arrays are what we check
    with h5py.File(output, "r") as h5:
        run = h5["runs"][list(h5["runs"])[0]]
        return np.nanmedian(run["batch_latency"][()]), float(np.nanmin(run["device_busy"][()]))


def test_slow_fault_is_batch_latency_and_sleep_is_a_host_gap(tmp_path):
    slow_latency, slow_busy = _run(tmp_path, "slow:seconds=0.5", "slow")
    _sleep_latency, sleep_busy = _run(tmp_path, "sleep:seconds=0.5", "sleep")
    assert slow_latency >= 0.5          # the wait is inside every timed forward pass
    assert slow_busy > sleep_busy       # sleep leaves the device idle between steps, slow does not
    assert slow_busy > 0.8              # a slower model is not an input-bound run
