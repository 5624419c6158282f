"""What a new user meets in the first hour (issue 19): device intent of configs, misspelt flags,
progress only on a terminal, accuracy that explains itself, the hardware in the header, units and
types that agree across outputs, and the report's polish."""
import io
import resource
import time

import pytest

from mpirunner.backends import family_for, family_warning
from mpirunner.config import resolve_config
from mpirunner.console import progress_wanted
from tests.conftest import REPO, run_cli

SMALL = ["--model", "resnet18", "--image-size", "32", "--warmup-iterations", "1"]


# ----------------------------------------------------------------------------- device intent

def test_mk2_config_without_ipus_exits_2_fast_naming_device_cpu():
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run_cli(["--config", "resnet50-mk2", "--data", "generated", "--batch-size", "90", "--iterations", "20",
                      "--num-io-tiles", "64"])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert result.returncode == 2, result.stderr
    # fast: no model built, no step begun (CPU seconds, which a busy machine does not stretch as it does wall time)
    assert (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime) < 15
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
    # an -mk2 config on the CPU is always announced, however short its step (here 4 samples)
    (line,) = [line for line in result.stderr.splitlines() if "samples a step" in line]
    assert line.startswith("batch 2: resnet18 16.16 ") and "4 samples a step (2 x 2 x 1 replica(s))" in line
    assert "the first step took" in result.stderr and "steps that follow will take about" in result.stderr
    assert "\r" not in _raw_stderr(["--device", "cpu", *SMALL, "--iterations", "2", "--output", tmp_path / "raw.h5"])
    assert "device: cpu backend on " in result.stdout and "thread(s) per rank, 1 rank(s) on" in result.stdout
    assert "first call: " in result.stdout and "compile: " not in result.stdout  # eager: nothing compiles


def test_the_efficientnet_b4_mk2_config_on_cpu_says_what_it_computes_before_its_first_step(tmp_path):
    """Its step is 1,536 samples (hours on a small CPU): the line with the first estimate comes right after the
    hardware line, before the step's inputs are made; the run is stopped there."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "mpirunner", "--config", "efficientnet-b4-mk2", "--device", "cpu",
               "--output", str(tmp_path / "b4.h5")]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen, hardware_at, line_at = [], None, None
    try:
        for text in process.stdout:
            seen.append(text)
            if text.startswith("device: cpu backend on "):
                hardware_at = time.monotonic()
            if "samples a step" in text:
                line_at = time.monotonic()
                break
    finally:
        process.kill()
        process.wait()
    output = "".join(seen)
    assert hardware_at is not None and line_at is not None, output
    assert line_at - hardware_at < 15, output  # the quick GEMM (software float16 here): under a second when quiet
    line = seen[-1].strip()
    assert line.startswith("batch 12: efficientnet-b4 16.16 ") and "1,536 samples a step (12 x 128 x 1" in line
    assert "estimate (FLOPs / GEMM rate)" in line and len(line) <= 160, line
    assert not (tmp_path / "b4.h5").exists()


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
    assert "\r" in _raw_stderr([*SMALL, "--progress", "--batch-size", "1", "--iterations", "2",
                                "--output", tmp_path / "p.h5"])


def _raw_stderr(args):
    """stderr of a run written to a file, undecoded (text mode would turn carriage returns into newlines)."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryFile() as stderr:
        done = subprocess.run([sys.executable, "-m", "mpirunner", *map(str, args)], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=stderr, timeout=180)
        stderr.seek(0)
        text = stderr.read().decode()
    assert done.returncode == 0, text
    return text


def test_check_outputs_help_says_after_the_timed_steps():
    result = run_cli(["--help"])
    assert "after the timed steps, compare one batch" in " ".join(result.stdout.split())


@pytest.mark.parametrize("args", [["--progress", "--no-progress"]])
def test_contradicting_progress_flags_are_a_usage_error(args):
    result = run_cli(args)
    assert result.returncode == 2 and "contradict" in result.stderr


# ----------------------------------------------------------------------------- accuracy that explains itself

def _two_class_folder(tmp_path):
    from tests.conftest import write_jpegs

    write_jpegs(tmp_path / "images" / "cat", 3, seed=1)
    write_jpegs(tmp_path / "images" / "dog", 2, seed=2)
    return tmp_path / "images"


def _run_block(stdout):
    """The run block: from its '==' header to its 'latency avg' line."""
    start = stdout.index("\n== ")
    return stdout[start:stdout.index("latency avg:", start)]


def test_real_data_run_explains_its_accuracy_inside_the_run_block_and_the_report_shows_it(tmp_path):
    output = tmp_path / "real.h5"
    result = run_cli([*SMALL, "--no-progress", "--data", "real", "--data-path", _two_class_folder(tmp_path),
                      "--batch-size", "4", "--iterations", "3", "--output", output])
    assert result.returncode == 0, result.stderr
    block = _run_block(result.stdout)
    assert "% (top-1 over" in block and result.stdout.count("accuracy: ") == 1
    assert "5 images in 2 class folder(s) loaded" in block
    assert "cat=0, dog=1" in block
    assert "cycle through the images" in block  # 5 steps x 4 samples > 5 images
    assert "weights are random (seeded), so accuracy is at chance level: top-1 about 0.10% over 1000" in block
    report = run_cli([output], module="mpirunner.report")
    assert report.returncode == 0, report.stderr
    assert "% (top-1 over" in report.stdout


def test_weights_torchvision_missing_from_the_cache_exits_2_naming_where_to_put_it(tmp_path):
    result = run_cli([*SMALL, "--no-progress", "--weights", "torchvision", "--iterations", "2",
                      "--output", tmp_path / "w.h5"], ranks=2, env={"TORCH_HOME": str(tmp_path / "torch")})
    assert result.returncode == 2, result.stderr
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    # one line, before placement or anything else is printed, on rank 0 only
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("mpirunner: error: --weights torchvision: ")
    assert str(expected) in line and "nothing is downloaded" in line


def test_weights_torchvision_loads_the_cached_file(tmp_path):
    import torch

    from mpirunner.models.registry import build_model
    from mpirunner.models.weights import load_weights

    torch.manual_seed(7)
    saved = build_model("resnet18")
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(saved.state_dict(), checkpoints / "resnet18-f37072fd.pth")
    torch.manual_seed(8)
    network = build_model("resnet18")
    old_home = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch" / "hub"))
    try:
        load_weights(network, "torchvision", "resnet18")
    finally:
        torch.hub.set_dir(old_home)
    assert torch.equal(network.conv1.weight, saved.conv1.weight)


# ----------------------------------------------------------------------------- the header names the hardware

def test_hardware_line_names_the_gpu_and_its_memory():
    from mpirunner.runfile.block import hardware_line

    line = hardware_line({"backend": "cuda", "device_name": "NVIDIA H200", "gpu_total_memory_bytes": 141 * 2**30},
                         [{"host": "n1", "threads": 8}, {"host": "n2", "threads": 8}])
    assert line == "device: cuda backend on NVIDIA H200 (141.0 GiB), 8 thread(s) per rank, 2 rank(s) on n1, n2"


def test_first_call_compiles_only_with_a_compiler():
    from mpirunner.backends.cpu import CpuBackend
    from tests.conftest import tiny_config

    class World:
        rank, size, local_rank, is_root = 0, 1, 0, True

    assert not CpuBackend(tiny_config(), World()).first_call_compiles()
    assert CpuBackend(tiny_config(compile="inductor"), World()).first_call_compiles()


# ----------------------------------------------------------------------------- units and types

def test_ranks_host_names_read_back_as_str(tmp_path):
    import h5py

    output = tmp_path / "ranks.h5"
    result = run_cli([*SMALL, "--no-progress", "--iterations", "2", "--output", output])
    assert result.returncode == 0, result.stderr
    with h5py.File(output) as h5:
        hosts = list(h5["ranks"].attrs["host"])
        assert hosts and all(type(host) is str for host in hosts)
        assert hosts == [value.decode() for value in h5["ranks"]["host"]]


# ----------------------------------------------------------------------------- report polish

@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory):
    output = tmp_path_factory.mktemp("sweep") / "sweep.h5"
    result = run_cli([*SMALL, "--no-progress", "--batch-size", "1,2", "--iterations", "3", "--output", output])
    assert result.returncode == 0, result.stderr
    return output


def test_report_batch_size_picks_one_run_of_a_sweep_for_its_histogram(sweep_file):
    result = run_cli([sweep_file, "--histogram", "--batch-size", "2"], module="mpirunner.report")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("latency histogram") == 1 and "batch 2:" in result.stdout
    missing = run_cli([sweep_file, "--histogram", "--batch-size", "7"], module="mpirunner.report")
    assert missing.returncode == 2 and "(it holds 1, 2)" in missing.stderr


def test_report_ranks_plot_of_a_sweep_says_it_cannot(sweep_file, tmp_path):
    result = run_cli([sweep_file, "--ranks", "--plot", tmp_path / "p.png"], module="mpirunner.report")
    assert result.returncode == 2 and "--batch-size N" in result.stderr
    assert not (tmp_path / "p.png").exists()
