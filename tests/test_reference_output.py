"""The reference harness's regexes read mpirunner's real output: throughput, average latency, top-1 accuracy."""
import re

import h5py
import pytest

from tests.conftest import run_cli, write_jpegs

# The reference harness's own patterns; it takes the first match of each in the output.
THROUGHPUT = r"throughput: *(.*?) samples\/sec"
LATENCY = r"latency avg: *(.*?) ms"
ACCURACY = r"accuracy: *(.*?)\%"


def test_reference_regexes_extract_the_stored_numbers_from_a_real_run(tmp_path):
    write_jpegs(tmp_path / "images" / "cat", 3, seed=1)
    write_jpegs(tmp_path / "images" / "dog", 2, seed=2)
    output = tmp_path / "real.h5"
    result = run_cli(["--model", "resnet18", "--image-size", "32", "--no-progress", "--warmup-iterations", "1",
                      "--data", "real", "--data-path", tmp_path / "images", "--batch-size", "4",
                      "--iterations", "3", "--output", output])
    assert result.returncode == 0, result.stderr
    with h5py.File(output) as h5:
        attrs = dict(h5["runs/bs00004"].attrs)
    throughput = float(re.search(THROUGHPUT, result.stdout).group(1))
    latency = float(re.search(LATENCY, result.stdout).group(1))
    accuracy = float(re.search(ACCURACY, result.stdout).group(1))  # a bare number: top-1, not "top-1 12.50"
    assert throughput == pytest.approx(attrs["throughput"], abs=0.006)
    assert latency == pytest.approx(attrs["latency_mean"], abs=6e-4)
    assert accuracy == pytest.approx(100 * attrs["accuracy_top1"], abs=0.006)
    top5 = re.search(r"top-5: *([\d.]+)%", result.stdout)
    assert top5 and float(top5.group(1)) == pytest.approx(100 * attrs["accuracy_top5"], abs=0.006)
