"""Data sources: generated, synthetic and real (image folder) inputs, and the images they hand out.

Unit tests build the sources directly (small shapes, 32 px images).
"""
import time

import torch
from PIL import Image

from mpirunner import data
from mpirunner.bench import measure
from tests.conftest import tiny_config, write_jpegs


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
