"""End-to-end runs with a tiny model: the HDF5 file a user gets, alone and under mpiexec."""
import h5py
import numpy as np
import pytest

from mpirunner import SCHEMA
from tests.conftest import run_cli

ROOT_ATTRS = ("schema", "mpirunner_version", "created", "argv", "config", "world_size", "backend",
              "device_name", "torch_version", "mpi_version", "poptorch_version", "git_commit")
RUN_ATTRS = ("batch_size", "device_iterations", "samples_per_step", "model", "data", "precision", "dtype",
             "iterations", "warmup", "throughput", "throughput_sum", "latency_mean", "latency_min", "latency_p50",
             "latency_p90", "latency_p95", "latency_p99", "latency_p99.9", "latency_max", "std", "cv", "valid",
             "validity_reason")


def test_single_process_run_writes_the_schema(tmp_path, tiny_args):
    output = tmp_path / "one.h5"
    result = run_cli([*tiny_args, "--batch-size", "2", "--iterations", "6", "--output", output])
    assert result.returncode == 0, result.stderr
    assert "throughput:" in result.stdout and "samples/sec" in result.stdout
    assert "latency avg:" in result.stdout
    assert str(output) in result.stdout
    with h5py.File(output) as h5:
        for key in ROOT_ATTRS:
            assert key in h5.attrs, key
        assert h5.attrs["schema"] == SCHEMA
        assert h5.attrs["world_size"] == 1
        assert h5["ranks"].shape == (1,)
        run = h5["runs/bs00002"]
        for key in RUN_ATTRS:
            assert key in run.attrs, key
        assert run["step_seconds"].shape == (1, 6)
        assert run["step_start"].shape == (1, 6)
        assert run["batch_latency"].shape == (1, 6)
        assert run["compile_seconds"].shape == (1,)
        assert run["warmup_seconds"].shape == (1, 1) and run["warmup_seconds"][0, 0] > 0  # --warmup-iterations 1
        counts, edges = run["histogram/counts"][()], run["histogram/edges"][()]
        assert counts.sum() == 6 and edges.size == counts.size + 1
        starts, durations = run["step_start"][()], run["step_seconds"][()]
        expected = run.attrs["samples_per_step"] * durations.size / (np.max(starts + durations) - np.min(starts))
        assert run.attrs["throughput"] == pytest.approx(expected, rel=1e-9)


def test_sweep_makes_one_group_per_batch_size(tmp_path, tiny_args):
    output = tmp_path / "sweep.h5"
    result = run_cli([*tiny_args, "--batch-size", "1..3", "--iterations", "3", "--output", output])
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("throughput:") == 3
    with h5py.File(output) as h5:
        assert sorted(h5["runs"]) == ["bs00001", "bs00002", "bs00003"]
        assert [h5["runs"][name].attrs["batch_size"] for name in sorted(h5["runs"])] == [1, 2, 3]


def test_two_ranks_under_mpiexec(tmp_path, tiny_args):
    output = tmp_path / "two.h5"
    result = run_cli([*tiny_args, "--batch-size", "1,2", "--iterations", "4", "--warmup-iterations", "3",
                      "--output", output], ranks=2)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("throughput:") == 2  # rank 0 alone prints
    with h5py.File(output) as h5:
        assert h5.attrs["world_size"] == 2
        assert sorted(h5["ranks"]["rank"]) == [0, 1]
        for name in ("bs00001", "bs00002"):
            assert h5["runs"][name]["step_seconds"].shape == (2, 4)
            assert h5["runs"][name]["compile_seconds"].shape == (2,)
            warmup = h5["runs"][name]["warmup_seconds"][()]
            assert warmup.shape == (2, 3) and (warmup > 0).all()  # every rank's warm-up steps, timed


def test_existing_output_is_kept_without_overwrite(tmp_path, tiny_args):
    output = tmp_path / "kept.h5"
    output.write_bytes(b"precious")
    result = run_cli([*tiny_args, "--output", output])
    assert result.returncode == 2
    assert "--overwrite" in result.stderr
    assert output.read_bytes() == b"precious"
