"""Roofs (--measure-peak): GEMM peak and memory bandwidth per rank, the binding roof by the roofline model."""
from types import SimpleNamespace

import h5py
import pytest
import torch

from mpirunner import peak
from mpirunner.backends.base import Backend
from mpirunner.backends.cuda import CudaBackend
from mpirunner.roofline import Roofs, roof_attrs, traffic_estimate
from tests.conftest import run_cli


def test_binding_roof_is_the_lower_of_compute_and_intensity_times_bandwidth():
    roofs = Roofs(peak_flops=[100e9, 100e9], peak_memory_bandwidth=[10e9, 10e9], weight_bytes=8_000_000,
                  activation_bytes_per_sample=1_000_000)
    # batch 8: 2 x 1 MB + 8 MB / 8 = 3 MB per sample
    low = roof_attrs(30e6, 4e9, ["a", "b"], roofs, batch_size=8)   # 10 FLOP/byte x 20 GB/s = 200 GFLOP/s = peak
    assert low["bytes_per_sample_estimate"] == 3e6 and low["arithmetic_intensity_estimate"] == pytest.approx(10)
    assert low["binding_roof"] == "compute (GEMM peak)"
    memory = roof_attrs(3e6, 4e9, ["a", "b"], roofs, batch_size=8)  # 1 FLOP/byte: 20 GFLOP/s, memory-bound
    assert memory["binding_roof"] == "memory bandwidth"
    assert memory["roof_flops"] == pytest.approx(20e9) and memory["roof_utilization"] == pytest.approx(0.2)
    assert memory["peak_memory_bandwidth"] == 20e9


def test_traffic_estimate_counts_weights_and_every_layers_output():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 8 * 8, 10))
    weights, activations = traffic_estimate(model, 8, torch.float32, torch.float32)
    assert weights == 4 * sum(p.numel() for p in model.parameters())
    assert activations == 4 * (4 * 64 + 4 * 64 + 4 * 64 + 10)  # conv, relu, flatten, linear outputs
    assert traffic_estimate(model, 8, torch.float32, torch.bfloat16)[0] == weights // 2


def test_memory_bandwidth_and_gemm_peak_are_measured_on_the_given_device():
    bandwidth = max(peak.copy_rates(seconds=0.05, array_bytes=8 << 20, device="cpu"))
    flops = max(peak.gemm_rates(torch.float32, seconds=0.05, size=128, device="cpu"))
    assert 1e8 < bandwidth < 1e13 and 1e7 < flops < 1e14


def test_the_cuda_backend_measures_its_gpu_a_cpu_backend_its_cpus():
    # a CPU double of the CUDA backend: only the device attribute roof_device reads
    double = SimpleNamespace(device=torch.device("cuda", 1))
    assert CudaBackend.roof_device(double) == torch.device("cuda", 1)
    assert Backend.roof_device(double) == "cpu"
    assert CudaBackend.uses_option(SimpleNamespace(name="cuda"), "measure_peak")


def test_measure_roofs_names_both_columns_with_the_spread_of_their_batches(monkeypatch):
    seen = []
    monkeypatch.setattr(peak, "gemm_rates", lambda dtype, device: seen.append(("gemm", device)) or [4e12, 5e12, 3e12])
    monkeypatch.setattr(peak, "copy_rates", lambda device: seen.append(("copy", device)) or [3e12, 2e12])
    columns = peak.measure_roofs(torch.float16, device="cuda:0")
    assert columns == {"gemm_peak_flops": 5e12, "peak_flops": 5e12, "peak_flops_median": 4e12, "peak_flops_batches": 3,
                       "peak_memory_bandwidth": 3e12, "peak_memory_bandwidth_median": 2.5e12,
                       "peak_memory_bandwidth_batches": 2}
    assert seen == [("gemm", "cuda:0"), ("copy", "cuda:0")]


def test_every_timed_batch_is_kept_and_the_best_is_the_roof():
    rates = peak.gemm_rates(torch.float32, seconds=0.05, size=64, device="cpu")
    assert len(rates) >= 1 and max(peak.gemm_rates(torch.float32, seconds=0.0, size=64)) > 0
    columns = peak._roof_columns("peak_flops", rates)
    assert columns["peak_flops"] == max(rates) and min(rates) <= columns["peak_flops_median"] <= max(rates)


def test_a_cpu_run_stores_both_roofs_per_rank_and_names_the_binding_one(tmp_path, tiny_args):
    output = tmp_path / "roofs.h5"
    result = run_cli([*tiny_args, "--batch-size", "2", "--iterations", "3", "--measure-peak", "--output", output])
    assert result.returncode == 0, result.stderr
    with h5py.File(output) as h5:
        ranks, run = h5["ranks"], h5["runs/bs00002"].attrs
        assert ranks["peak_flops"][0] > 1e8 and ranks["peak_memory_bandwidth"][0] > 1e8
        assert 0 < ranks["peak_flops_median"][0] <= ranks["peak_flops"][0] and ranks["peak_flops_batches"][0] >= 1
        assert 0 < ranks["peak_memory_bandwidth_median"][0] <= ranks["peak_memory_bandwidth"][0]
        assert run["peak_flops_median"] == pytest.approx(ranks["peak_flops_median"][0])
        assert run["peak_memory_bandwidth"] == pytest.approx(ranks["peak_memory_bandwidth"][0])
        assert run["binding_roof"] in ("memory bandwidth", "compute (GEMM peak)")
        assert run["roof_utilization"] == pytest.approx(run["achieved_flops"] / run["roof_flops"])
        binding = run["binding_roof"]
    assert f"of the binding roof, {binding}" in result.stdout and "FLOP/byte, an estimate" in result.stdout
