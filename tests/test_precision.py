"""Precision, 8-bit IO and input normalisation: the dtypes the model sees and what the file records.

Unit tests build the model directly (resnet18 at 32 px); the rest run the CLI as a user would.
"""
import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from mpirunner.models.assembly import build_benchmark_model, build_network
from mpirunner.models.normalization import IMAGENET_MEAN, IMAGENET_STD, NormalizeInput
from mpirunner import data
from mpirunner.backends.cpu import CpuBackend
from tests.conftest import run_cli, tiny_config


def test_uint8_reaches_the_model_under_eight_bit_io():
    config = tiny_config(eight_bit_io=True, normalization_location="device", data="generated")
    model = build_benchmark_model(config, torch.bfloat16)
    backend = CpuBackend(config, world=None)
    backend.prepare(model.module, model.image_size)
    seen = []
    model.module.register_forward_pre_hook(lambda _module, args: seen.append(args[0].dtype))
    source = data.make_input_source(config, backend, data.step_shape(2, 1, 32), model.input_dtype, rank=0)
    outputs, _ = backend.make_step(2, source.next_input())(source.next_input())
    assert seen == [torch.uint8]
    assert outputs.shape == (2, 1000)


def test_device_normalisation_equals_torchvision_normalize():
    from torchvision import transforms

    pixels = np.random.default_rng(3).integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    expected = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)(transforms.ToTensor()(image))
    on_device = NormalizeInput()(transforms.PILToTensor()(image).unsqueeze(0))[0]
    assert on_device.dtype == torch.float32
    assert torch.allclose(on_device, expected, atol=1e-5, rtol=0)


def test_eight_bit_io_with_host_normalisation_switches_to_device(tmp_path, tiny_args):
    output = tmp_path / "switch.h5"
    result = run_cli([*tiny_args, "--eight-bit-io", "--normalization-location", "host", "--iterations", "2",
                      "--output", output])
    assert result.returncode == 0, result.stderr
    assert "switched to device" in result.stderr
    with h5py.File(output) as h5:
        assert h5.attrs["normalization_location_used"] == "device"
        assert h5.attrs["input_dtype"] == "uint8"


@pytest.mark.parametrize("precision, half, weights, compute", [
    ("32.32", torch.bfloat16, torch.float32, torch.float32),
    ("16.16", torch.bfloat16, torch.bfloat16, torch.bfloat16),
    ("16.16", torch.float16, torch.float16, torch.float16),
    ("16.32", torch.bfloat16, torch.bfloat16, torch.float32),
])
def test_precision_sets_the_parameter_dtype(precision, half, weights, compute):
    model = build_benchmark_model(tiny_config(precision=precision), half)
    parameters = list(model.module.parameters())
    assert {p.dtype for p in parameters} == {compute}
    assert model.compute_dtype == compute and model.weights_dtype == weights
    if precision == "16.32":  # 16-bit weights: every value survives a round trip through the half type
        assert all(torch.equal(p, p.to(half).float()) for p in parameters)
        reference = build_network(tiny_config())
        assert not all(torch.equal(a, b) for a, b in zip(parameters, reference.parameters()))


def test_precision_and_half_partial_are_recorded(tmp_path, tiny_args):
    output = tmp_path / "half.h5"
    result = run_cli([*tiny_args, "--precision", "16.16", "--half-dtype", "float16", "--half-partial",
                      "--iterations", "2", "--output", output])
    assert result.returncode == 0, result.stderr
    assert "--half-partial" in result.stderr  # named as unused by the CPU backend
    with h5py.File(output) as h5:
        assert h5.attrs["dtype"] == "float16" and h5.attrs["weights_dtype"] == "float16"
        assert h5.attrs["half_dtype"] == "float16"
        assert not h5.attrs["half_partial_used"]
        assert h5["runs/bs00001"].attrs["dtype"] == "float16"
        assert "float16" in h5.attrs["precision_detail"]


@pytest.mark.parametrize("native", [True, False])
def test_sixteen_bit_on_a_cpu_without_a_native_16_bit_type_is_said_once(monkeypatch, caplog, native):
    """16.16 on a CPU without AVX512-BF16/AMX/AVX512-FP16 runs in software, several times slower than float32:
    rank 0 says so, with the remedy; a CPU that has the type, or 32.32, says nothing."""
    import logging

    from mpirunner.backends import cpu

    class Root:
        is_root = True

    monkeypatch.setattr(cpu, "cpu_has_bf16", lambda: native)
    monkeypatch.setattr(cpu, "cpu_has_fp16", lambda: native)
    for precision, expected in (("16.16", not native), ("32.32", False)):
        caplog.clear()
        backend = CpuBackend(tiny_config(precision=precision), Root())
        logger = logging.getLogger("mpirunner")
        logger.addHandler(caplog.handler)  # whether or not an earlier test turned propagation off
        try:
            with caplog.at_level(logging.WARNING, logger="mpirunner"):
                backend.prepare(torch.nn.Linear(2, 2), 32)
        finally:
            logger.removeHandler(caplog.handler)
        lines = {record.getMessage() for record in caplog.records if "no native 16-bit type" in record.getMessage()}
        assert len(lines) == (1 if expected else 0), lines
        if expected:
            assert "--precision 32.32" in lines.pop()
