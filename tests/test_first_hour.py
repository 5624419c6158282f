"""What a new user meets in the first hour (issue 19): device intent of configs, misspelt flags,
progress only on a terminal, accuracy that explains itself, the hardware in the header, units and
types that agree across outputs, and the report's polish."""
import io
import time

import pytest

from mpirunner.backends import family_for, family_warning
from mpirunner.config import resolve_config
from mpirunner.console import progress_wanted
from tests.conftest import run_cli

SMALL = ["--model", "resnet18", "--image-size", "32", "--warmup-iterations", "1"]


# ----------------------------------------------------------------------------- device intent

def test_mk2_config_without_ipus_exits_2_fast_naming_device_cpu():
    started = time.monotonic()
    result = run_cli(["--config", "resnet50-mk2", "--data", "generated", "--batch-size", "90", "--iterations", "20",
                      "--num-io-tiles", "64"])
    assert result.returncode == 2, result.stderr
    assert time.monotonic() - started < 15
    assert "--device cpu" in result.stderr and "11,520 samples" in result.stderr
    assert "Traceback" not in result.stderr


def test_auto_keeps_the_family_the_config_declares():
    mk2 = resolve_config({"config": "resnet50-mk2", "device": "auto"})
    assert mk2.config_device == "ipu"
    assert family_for(mk2, ipu_available=lambda: False, cuda_available=lambda: False) == "ipu"
    plain = resolve_config({"model": "resnet18"})
    assert family_for(plain, ipu_available=lambda: False, cuda_available=lambda: False) == "cpu"


def test_device_cpu_on_mk2_config_warns_with_the_step_size():
    config = resolve_config({"config": "resnet50-mk2", "device": "cpu"})
    warning = family_warning("cpu", config)
    assert "11,520 samples" in warning and "batch 90 x 128 device iterations" in warning
    assert family_warning("ipu", config) is None
    assert family_warning("cpu", resolve_config({"config": "resnet50-cpu"})) is None


def test_device_cpu_run_warns_estimates_and_draws_no_progress_into_a_file(tmp_path):
    output = tmp_path / "cpu.h5"
    result = run_cli(["--config", "resnet50-mk2", "--device", "cpu", *SMALL, "--batch-size", "2",
                      "--device-iterations", "2", "--iterations", "3", "--output", output])
    assert result.returncode == 0, result.stderr
    assert "one step is 4 samples" in result.stderr
    assert "the first step took" in result.stderr and "steps that follow will take about" in result.stderr
    assert "\r" not in result.stderr  # stderr is a pipe: no progress-bar frames


# ----------------------------------------------------------------------------- flags and progress

def test_misspelt_flag_gets_a_suggestion():
    result = run_cli(["--ouput", "x.h5"])
    assert result.returncode == 2
    assert "did you mean --output" in result.stderr
    assert result.stderr.count("\n") == 1


class _Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def test_progress_only_on_a_terminal_unless_asked():
    assert progress_wanted(False, False, _Stream(True))
    assert not progress_wanted(False, False, _Stream(False))
    assert progress_wanted(True, False, _Stream(False))
    assert not progress_wanted(False, True, _Stream(True))


def test_progress_flag_forces_the_bar_into_a_file(tmp_path):
    result = run_cli([*SMALL, "--progress", "--batch-size", "1", "--iterations", "2", "--output", tmp_path / "p.h5"])
    assert result.returncode == 0, result.stderr
    assert "\r" in result.stderr


def test_check_outputs_help_says_after_the_timed_steps():
    result = run_cli(["--help"])
    assert "after the timed steps, compare one batch" in " ".join(result.stdout.split())


@pytest.mark.parametrize("args", [["--progress", "--no-progress"]])
def test_contradicting_progress_flags_are_a_usage_error(args):
    result = run_cli(args)
    assert result.returncode == 2 and "contradict" in result.stderr
