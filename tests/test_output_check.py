"""Output check: compare against the float32 eager reference, pass for bfloat16, flag a broken model.

Unit tests call the comparison directly; the rest run the CLI as a user would (resnet18 at 32 px).
"""
import h5py
import numpy as np
import pytest
import torch

from mpirunner.checks.output_check import compare_outputs, tie_tolerance
from tests.conftest import run_cli


def test_compare_outputs_counts_near_ties_as_agreement():
    reference = torch.tensor([[1.0, 0.99, -1.0], [1.0, 0.2, -1.0]])
    flipped_tie = torch.tensor([[0.98, 0.99, -1.0], [1.0, 0.2, -1.0]])
    numbers = compare_outputs(flipped_tie, reference, torch.bfloat16)
    assert numbers["top1_agreement"] == 0.5
    assert numbers["top1_agreement_within_ties"] == 1.0  # 0.01 apart < 3.1% of 1.0
    assert compare_outputs(flipped_tie, reference, torch.float32)["top1_agreement_within_ties"] == 0.5
    assert numbers["max_abs_error"] == pytest.approx(0.02)
    assert compare_outputs(-reference, reference, torch.bfloat16)["top1_agreement_within_ties"] == 0.0
    assert not compare_outputs(reference * float("nan"), reference, torch.bfloat16)["finite"]
    assert tie_tolerance(torch.bfloat16) > tie_tolerance(torch.float16) > tie_tolerance(torch.float32)


def test_check_outputs_passes_for_bfloat16(tmp_path, tiny_args):
    output = tmp_path / "check.h5"
    result = run_cli([*tiny_args, "--precision", "16.16", "--half-dtype", "bfloat16", "--eight-bit-io",
                      "--normalization-location", "device", "--channels-last", "--batch-size", "4",
                      "--iterations", "2", "--check-outputs", "--output", output])
    assert result.returncode == 0, result.stderr
    assert "output check vs float32 eager reference" in result.stdout and "passed" in result.stdout
    with h5py.File(output) as h5:
        run = h5["runs/bs00004"].attrs
        assert run["output_check_passed"]
        assert 0 < run["output_check_max_abs_error"] < 0.1  # bfloat16 rounding: not zero, not large
        assert 0 < run["output_check_rel_error"] < 0.05
        assert run["output_check_top1_agreement_within_ties"] >= run["output_check_min_agreement"]
        reasons = run["validity_reason"]
        assert not any("output check" in str(reason) for reason in np.atleast_1d(reasons))


BROKEN_RUNNER = '''
"""mpirunner with a deliberately broken backend: the classifier's sign is flipped after the reference is built."""
import sys

import torch

from mpirunner.backends import cpu

original_prepare = cpu.CpuBackend.prepare


def broken_prepare(self, model, image_size):
    classifier = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        classifier.weight.neg_()
        classifier.bias.neg_()
    return original_prepare(self, model, image_size)


cpu.CpuBackend.prepare = broken_prepare
from mpirunner.cli import main  # noqa: E402

sys.exit(main())
'''


def test_check_outputs_flags_a_broken_model(tmp_path, tiny_args):
    (tmp_path / "broken_runner.py").write_text(BROKEN_RUNNER)
    output = tmp_path / "broken.h5"
    result = run_cli([*tiny_args, "--batch-size", "4", "--iterations", "2", "--check-outputs", "--output", output],
                     module="broken_runner", env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "FAILED" in result.stdout
    with h5py.File(output) as h5:
        run = h5["runs/bs00004"].attrs
        assert not run["output_check_passed"]
        assert run["output_check_top1_agreement"] < 0.9
        assert not run["valid"]
        assert any("output check failed" in str(reason) for reason in np.atleast_1d(run["validity_reason"]))
