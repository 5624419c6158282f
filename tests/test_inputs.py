"""Inputs and numerics: data modes, 8-bit IO, precision, model variants, weights, real data, accuracy, output check.

Unit tests build the pieces directly (resnet18 at 32 px); the rest run the CLI as a user would.
"""
import time

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from mpirunner.models.assembly import build_benchmark_model, build_network
from mpirunner.models.normalization import IMAGENET_MEAN, IMAGENET_STD, NormalizeInput
from mpirunner import data
from mpirunner.backends.cpu import CpuBackend
from mpirunner.bench import measure
from mpirunner.config import resolve_config
from mpirunner.errors import UsageError
from mpirunner.checks.output_check import compare_outputs, tie_tolerance
from tests.conftest import run_cli

TINY = {"model": "resnet18", "image_size": 32}


def tiny_config(**values):
    return resolve_config({**TINY, **values})


def write_jpegs(folder, count, seed=0, size=(48, 40)):
    """`count` small, different JPEGs (a colour gradient plus noise) in `folder`; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        base = rng.integers(0, 256, size=3)
        noise = rng.integers(0, 60, size=(size[1], size[0], 3))
        pixels = np.clip(base + noise + np.linspace(0, 80, size[0])[None, :, None], 0, 255).astype(np.uint8)
        path = folder / f"img{index:03d}.jpg"
        Image.fromarray(pixels).save(path, quality=95)
        paths.append(path)
    return paths


# ---------------------------------------------------------------- data modes

class Recorder:
    """Records when inputs are made and when steps run, on one clock."""

    def __init__(self):
        self.made_ns = []
        self.step_windows = []

    def step(self, step_input):
        begin = time.perf_counter_ns()
        outputs = step_input.float().mean()
        time.sleep(0.001)
        self.step_windows.append((begin, time.perf_counter_ns()))
        return outputs, [0.001]


def test_generated_makes_its_pool_before_timing_and_cycles_through_it(monkeypatch):
    recorder = Recorder()
    real_random_images = data.random_images

    def recording_random_images(*args, **kwargs):
        images = real_random_images(*args, **kwargs)
        recorder.made_ns.append(time.perf_counter_ns())
        return images

    monkeypatch.setattr(data, "random_images", recording_random_images)
    source = data.GeneratedInput((2, 3, 8, 8), torch.float32, seed=1)
    seen = []
    timings = measure(lambda x: (seen.append(x), recorder.step(x))[1], source, iterations=4, warmup_iterations=1,
                      barrier=lambda: None)
    assert len(timings.step_seconds) == 4
    assert len(recorder.made_ns) == data.POOL_MAX_STEPS  # made once, before the first step
    assert all(made < recorder.step_windows[0][0] for made in recorder.made_ns)
    assert not torch.equal(seen[0], seen[1])  # neighbouring steps differ
    assert seen[data.POOL_MAX_STEPS] is seen[0]  # then the pool repeats


def test_synthetic_makes_its_input_once_on_the_device(monkeypatch):
    calls = {"random": 0, "to_device": 0}
    real_random_images = data.random_images

    def counting_random_images(*args, **kwargs):
        calls["random"] += 1
        return real_random_images(*args, **kwargs)

    def to_device(tensor):
        calls["to_device"] += 1
        return tensor.clone()

    monkeypatch.setattr(data, "random_images", counting_random_images)
    source = data.SyntheticInput((2, 3, 8, 8), torch.uint8, seed=1, to_device=to_device)
    inputs = [source.next_input() for _ in range(5)]
    assert calls == {"random": 1, "to_device": 1}
    assert all(tensor is inputs[0] for tensor in inputs)


# ---------------------------------------------------------------- 8-bit IO and normalisation

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


# ---------------------------------------------------------------- precision

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


# ---------------------------------------------------------------- model variants

def test_group_norm_swap_leaves_no_batch_norm():
    batch_norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in build_network(tiny_config()).modules())
    network = build_network(tiny_config(norm_type="group", norm_num_groups=16, norm_eps=1e-3))
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in network.modules())
    group_norms = [m for m in network.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(group_norms) == batch_norms > 0
    assert all(m.num_groups == 16 and m.eps == 1e-3 for m in group_norms)
    assert network(torch.randn(2, 3, 32, 32)).shape == (2, 1000)
    bare = build_network(tiny_config(norm_type="none"))
    assert not any(isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm)) for m in bare.modules())


def test_groups_that_do_not_divide_channels_are_a_usage_error(tiny_args):
    with pytest.raises(UsageError, match="does not divide the 64 channels"):
        build_network(tiny_config(norm_type="group", norm_num_groups=5))
    result = run_cli([*tiny_args, "--norm-type", "group", "--norm-num-groups", "5"])
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("mpirunner: error:")]
    assert len(errors) == 1 and "--norm-num-groups 5" in errors[0]
    assert "Traceback" not in result.stderr


def test_efficientnet_group_dim_and_expand_ratio():
    def depthwise_like(network):
        return [m for m in network.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]

    plain = build_network(resolve_config({"model": "efficientnet-b0"}))
    assert all(m.groups == m.in_channels for m in depthwise_like(plain))
    grouped = build_network(resolve_config({"model": "efficientnet-b0", "efficientnet_group_dim": 16}))
    convs = depthwise_like(grouped)
    assert len(convs) == len(depthwise_like(plain))
    assert all(m.groups == m.in_channels // 16 and m.weight.shape[1] == 16 for m in convs)
    expanded = build_network(resolve_config({"model": "efficientnet-b0", "efficientnet_expand_ratio": 4}))
    widths = sorted({m.in_channels for m in depthwise_like(expanded)})
    assert widths == [32, 64, 96, 160, 320, 448, 768]  # stage inputs 16, 24, 40, 80, 112, 192 x 4; MBConv1 stays 32
    with pytest.raises(UsageError, match="efficientnet-b0..b7 only"):
        build_network(tiny_config(efficientnet_group_dim=16))


# ---------------------------------------------------------------- weights

def test_weights_load_strictly_and_a_mismatch_names_the_keys(tmp_path, tiny_args):
    torch.manual_seed(7)
    import torchvision

    saved = torchvision.models.resnet18()
    torch.save(saved.state_dict(), tmp_path / "r18.pt")
    loaded = build_network(tiny_config(weights=str(tmp_path / "r18.pt")))
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), saved.state_dict().values()))
    assert not torch.equal(build_network(tiny_config()).fc.weight, saved.fc.weight)  # not the seeded default

    result = run_cli([*tiny_args, "--model", "resnet34", "--weights", tmp_path / "r18.pt"])
    assert result.returncode == 2
    assert "missing keys: layer1.2." in result.stderr and "does not match model resnet34" in result.stderr
    state = saved.state_dict()
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pt")
    with pytest.raises(UsageError, match="unexpected keys: extra.weight"):
        build_network(tiny_config(weights=str(tmp_path / "extra.pt")))


# ---------------------------------------------------------------- real data and accuracy

def test_real_images_are_resized_center_cropped_and_labelled_by_class_folder(tmp_path):
    from torchvision import transforms

    write_jpegs(tmp_path / "b_dog", 2, seed=1)
    write_jpegs(tmp_path / "a_cat", 3, seed=2, size=(40, 64))
    images, labels, classes = data.load_image_set(str(tmp_path), 32)
    assert classes == ("a_cat", "b_dog")
    assert images.shape == (5, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.tolist() == [0, 0, 0, 1, 1]
    first = Image.open(tmp_path / "a_cat" / "img000.jpg").convert("RGB")
    expected = transforms.PILToTensor()(transforms.CenterCrop(32)(transforms.Resize(36)(first)))  # 32 * 256/224
    assert torch.equal(images[0], expected)
    share, share_labels, _ = data.load_image_set(str(tmp_path), 32, rank=1, world_size=2)
    assert torch.equal(share, images[1::2]) and share_labels.tolist() == [0, 1]

    flat = tmp_path / "flat"
    write_jpegs(flat, 3)
    flat_images, flat_labels, _ = data.load_image_set(str(flat), 32)
    assert flat_images.shape[0] == 3 and flat_labels is None


def test_real_data_cycles_through_the_images(tmp_path):
    write_jpegs(tmp_path / "only", 3)
    config = tiny_config(data="real", data_path=str(tmp_path), eight_bit_io=True, normalization_location="device")
    source = data.make_input_source(config, None, data.step_shape(2, 1, 32), torch.uint8, rank=0)
    images, _, _ = data.load_image_set(str(tmp_path), 32)
    steps = [source.next_input() for _ in range(3)]
    assert torch.equal(torch.cat(steps), images[[0, 1, 2, 0, 1, 2]])


def _direct_counts(weights, folder, image_size):
    """Top-1/top-5 of the saved weights on the folder's images, computed with torchvision alone."""
    import torchvision
    from torchvision import datasets, transforms

    network = torchvision.models.resnet18()
    network.load_state_dict(torch.load(weights))
    network.eval()
    transform = transforms.Compose([transforms.Resize(int(image_size * 256 / 224)), transforms.CenterCrop(image_size),
                                    transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    dataset = datasets.ImageFolder(folder, transform=transform)
    images = torch.stack([image for image, _ in dataset])
    labels = torch.tensor([label for _, label in dataset])
    with torch.no_grad():
        top5 = network(images).topk(5, dim=1).indices
    return int((top5[:, 0] == labels).sum()), int((top5 == labels[:, None]).any(dim=1).sum()), len(labels)


def test_accuracy_from_the_runner_equals_a_direct_computation(tmp_path, tiny_args):
    import torchvision

    torch.manual_seed(11)
    network = torchvision.models.resnet18()
    with torch.no_grad():  # only classes 0..5 can win, so top-1 and top-5 over 6 class folders are informative
        network.fc.weight[6:] = 0
        network.fc.weight[:6] *= 20
        network.fc.bias[6:] = -100
    torch.save(network.state_dict(), tmp_path / "weights.pt")
    folder = tmp_path / "images"
    for label in range(6):
        write_jpegs(folder / f"class{label}", 2, seed=label)
    top1, top5, samples = _direct_counts(tmp_path / "weights.pt", folder, 32)
    assert 0 < top1 < top5 < samples  # the check below means something

    output = tmp_path / "accuracy.h5"
    # 2 ranks x 6 images each; (first call + 1 warm-up + 4 timed) x 2 = 12 samples per rank: each image twice
    result = run_cli([*tiny_args, "--data", "real", "--data-path", folder, "--weights", tmp_path / "weights.pt",
                      "--batch-size", "2", "--iterations", "4", "--output", output], ranks=2)
    assert result.returncode == 0, result.stderr
    assert "% (top-1 over" in result.stdout
    with h5py.File(output) as h5:
        run = h5["runs/bs00002"].attrs
        assert run["data"] == "real"
        assert run["accuracy_samples"] == 2 * samples
        assert (run["accuracy_top1_correct"], run["accuracy_top5_correct"]) == (2 * top1, 2 * top5)
        assert run["accuracy_top1"] == pytest.approx(top1 / samples)
        assert run["accuracy_top5"] == pytest.approx(top5 / samples)


def test_flat_folder_runs_without_accuracy(tmp_path, tiny_args):
    write_jpegs(tmp_path / "flat", 3)
    output = tmp_path / "flat.h5"
    result = run_cli([*tiny_args, "--data", "real", "--data-path", tmp_path / "flat", "--eight-bit-io",
                      "--normalization-location", "device", "--iterations", "2", "--output", output])
    assert result.returncode == 0, result.stderr
    with h5py.File(output) as h5:
        assert h5["runs/bs00001"].attrs["data"] == "real"
        assert "accuracy_top1" not in h5["runs/bs00001"].attrs


# ---------------------------------------------------------------- output check

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


def test_generated_images_are_seeded_bytes_laid_out_for_the_backend():
    shape = (2, 3, 8, 8)
    first = data.random_images(shape, torch.uint8, data.image_generator(5), channels_last=True)
    again = data.random_images(shape, torch.uint8, data.image_generator(5), channels_last=True)
    assert first.shape == shape and first.dtype == torch.uint8
    assert first.is_contiguous(memory_format=torch.channels_last) and not first.is_contiguous()
    assert torch.equal(first, again)  # seeded: every run sees the same data
    assert data.random_images(shape, torch.uint8, data.image_generator(5)).is_contiguous()
    values = data.random_images((64, 3, 32, 32), torch.float32, data.image_generator(1))
    assert abs(values.mean().item()) < 0.02 and abs(values.std().item() - 1.0) < 0.02
