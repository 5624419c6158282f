"""The input path: inputs are made before timing, bounded in memory, and a run that measures its own input
path says so (host_gap, device_busy and their verdict reasons). See docs/input-path.md."""
import time

import h5py
import numpy as np
import pytest
import torch

from mpirunner import data
from mpirunner.bench import measure
from mpirunner.config import resolve_config
from mpirunner.checks import ValidityRules, decide_validity
from mpirunner.stats import input_shares
from tests.conftest import run_cli, write_jpegs


def test_after_the_pool_is_made_a_step_input_comes_from_it_without_drawing_or_allocating(monkeypatch):
    source = data.GeneratedInput((4, 3, 16, 16), torch.uint8, seed=3)
    pool_pointers = [tensor.data_ptr() for tensor in source.pool]

    def no_drawing(*args, **kwargs):
        raise AssertionError("drew random data after the pool was made")

    monkeypatch.setattr(data, "random_images", no_drawing)
    monkeypatch.setattr(data, "image_generator", no_drawing)
    handed = [source.next_input() for _ in range(3 * len(source.pool))]
    assert [tensor.data_ptr() for tensor in handed] == pool_pointers * 3  # the pool's own tensors, in turn
    assert len(set(pool_pointers)) == data.POOL_MAX_STEPS


def test_the_pool_stays_within_its_memory_bound_and_keeps_one_step_when_a_step_is_larger():
    step_bytes = 4 * 3 * 16 * 16
    within = data.GeneratedInput((4, 3, 16, 16), torch.uint8, seed=3, limit_bytes=2 * step_bytes + 1)
    assert len(within.pool) == 2 and within.pool_bytes == 2 * step_bytes
    larger = data.GeneratedInput((4, 3, 16, 16), torch.uint8, seed=3, limit_bytes=10)
    assert len(larger.pool) == 1 and larger.pool_bytes == step_bytes


@pytest.mark.parametrize("dtype, location, channels_last", [
    (torch.uint8, "device", False), (torch.float16, "host", True), (torch.float32, "none", False)])
def test_real_data_arrives_contiguous_and_in_its_final_dtype(tmp_path, dtype, location, channels_last):
    write_jpegs(tmp_path / "class0", 5)
    images, labels, _ = data.load_image_set(str(tmp_path), 32)
    source = data.RealInput(images, labels, data.step_shape(2, 1, 32), dtype, location, channels_last=channels_last)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    assert len(source.ring) == 5  # 5 images, 2 per step: the cycle repeats after 5 steps
    for _ in range(7):
        step_input = source.next_input()
        assert step_input.dtype == dtype and step_input.is_contiguous(memory_format=memory_format)
    expected = data.prepare_images(images[[4, 0]], dtype, location)  # step 7 wraps: ring entry 7 % 5 = 2
    assert torch.equal(source.ring[2], expected)


def test_the_real_data_ring_is_bounded_by_the_pool_limit(tmp_path):
    write_jpegs(tmp_path / "class0", 7)
    images, labels, _ = data.load_image_set(str(tmp_path), 32)
    step_bytes = 2 * 3 * 32 * 32
    source = data.RealInput(images, labels, data.step_shape(2, 1, 32), torch.uint8, "device",
                            limit_bytes=3 * step_bytes)
    assert len(source.ring) == 3 and source.pool_bytes == 3 * step_bytes
    assert source.next_input() is source.ring[0] and [source.next_input() for _ in range(3)][-1] is source.ring[0]


def test_accuracy_is_counted_after_the_timed_steps(tmp_path):
    write_jpegs(tmp_path / "class0", 4)
    images, labels, _ = data.load_image_set(str(tmp_path), 32)
    source = data.RealInput(images, labels, data.step_shape(2, 1, 32), torch.float32, "none")
    counted = []
    source.counter.add = lambda outputs, step_labels: counted.append(step_labels)
    output_buffer = torch.zeros(2, 10)

    def step(step_input):  # like CUDA: one output buffer, overwritten by every call
        output_buffer.fill_(float(step_input.sum()))
        return output_buffer, [0.0]

    measure(source.observe(step), source, iterations=3, warmup_iterations=1, barrier=lambda: None)
    assert counted == []  # nothing counted between steps
    assert source.accuracy_counts() is not None and len(counted) == 5
    kept = [outputs for outputs, _ in source._pending]  # cleared after counting
    assert kept == []


def test_shares_of_the_window():
    starts = np.array([[0.0, 1.0, 2.0]])
    durations = np.array([[0.9, 0.9, 0.9]])  # window 2.9 s, 0.2 s of it between steps
    latencies = np.array([[0.45, 0.45, 0.45]])
    host_gap, device_busy = input_shares(starts, durations, latencies)
    assert host_gap[0] == pytest.approx(0.2 / 2.9) and device_busy[0] == pytest.approx(1.35 / 2.9)


def test_gaps_and_an_idle_device_are_verdict_reasons():
    steps = np.full((2, 20), 0.01)
    rules = ValidityRules(min_iterations=10, max_cv_percent=10)
    validity = decide_validity(steps, rules, timed_seconds=1.0, hosts=["a", "b"], host_gap=np.array([0.001, 0.086]),
                               device_busy=np.array([0.95, 0.12]))
    assert not validity.valid
    assert [reason.split(" (remedy: ")[0] for reason in validity.reasons] == [
        "runner overhead: 8.6% of the window between steps on rank 1 (b)",
        "input-bound: device busy 12% of the window on rank 1 (b)"]
    assert all("(remedy: " in reason for reason in validity.reasons)
    validity = decide_validity(steps, rules, timed_seconds=1.0, host_gap=np.array([0.01]), device_busy=None)
    assert validity.valid and validity.reasons == []


class SlowSource(data.InputSource):
    """Test only: an input source that takes as long to hand out a step as the step takes to run."""

    def __init__(self, inner):
        self.inner = inner
        self.pool, self.pool_bytes = inner.pool, inner.pool_bytes
        self.handed_out_at = None

    def next_input(self):
        # Sleep as long as the step just run took, so the gap is about half the window however
        # fast or loaded the host is.
        step_seconds = 0.0 if self.handed_out_at is None else time.perf_counter() - self.handed_out_at
        time.sleep(max(0.02, step_seconds))
        step_input = self.inner.next_input()
        self.handed_out_at = time.perf_counter()
        return step_input

    def check_input(self):
        return self.inner.check_input()


def test_a_slow_input_source_gets_the_runner_overhead_reason(tmp_path, monkeypatch, tiny_args):
    """In-process job (run_job) on one rank with a source that sleeps between steps."""
    from mpirunner.job import run_job

    real_make = data.make_input_source
    monkeypatch.setattr(data, "make_input_source", lambda *args, **kwargs: SlowSource(real_make(*args, **kwargs)))
    output = tmp_path / "slow.h5"
    config = resolve_config({"model": "resnet18", "image_size": 32, "batch_size": "1", "iterations": 10,
                             "no_progress": True, "output": str(output), "device": "cpu", "numa_aware": "no"})
    run_job(config)
    with h5py.File(output) as h5:
        run = h5["runs/bs00001"]
        assert run["host_gap"].shape == (1,) and run["device_busy"].shape == (1,)
        assert run["host_gap"][0] > 0.1
        reasons = list(run.attrs["validity_reason"])
        assert not run.attrs["valid"]
        assert any(str(reason).startswith("runner overhead: ") for reason in reasons), reasons


def test_every_run_group_records_its_shares_and_its_pool(tmp_path, tiny_args):
    output = tmp_path / "shares.h5"
    result = run_cli([*tiny_args, "--batch-size", "1,2", "--iterations", "3", "--input-pool-mib", "1",
                      "--output", output])
    assert result.returncode == 0, result.stderr
    assert "input: host gap" in result.stdout
    with h5py.File(output) as h5:
        for name in ("bs00001", "bs00002"):
            run = h5["runs"][name]
            assert run["host_gap"].shape == (1,) and run["device_busy"].shape == (1,)
            assert 0 <= run["host_gap"][0] < 1 and 0 < run["device_busy"][0] <= 1
            assert run.attrs["input_pool_steps"] == data.POOL_MAX_STEPS
            assert run.attrs["input_pool_bytes"] <= run.attrs["input_pool_limit_bytes"] == 1 << 20
