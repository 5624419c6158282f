"""Issue 26's audit of the IPU backend against the real poptorch, popdist, PopART and the reference harness.

Each test pins one behaviour of the real library or harness (the source it comes from is named in
docs/ipu.md) that the backend or the stand-in in tests/fake_poptorch did not follow before.
"""
import time

import pytest

from ipu_fake import config, fake_sdk, prepared_backend, step_input, world  # noqa: F401

SLOW_GET_LATENCY_SECONDS = 0.25


# ---------------------------------------------------------------- 3: getLatency() outside the timed window


def test_ipu_get_latency_is_read_after_the_timed_step(fake_sdk):
    """The reference stops its clock right after the model call; a slow getLatency() must not show in a step."""
    from mpirunner.bench import measure

    run_config = config("--device ipu --batch-size 1 --iterations 3 --warmup-iterations 1")
    backend, model = prepared_backend(run_config, world())
    first = step_input(run_config, backend, model, 1)
    step = backend.make_step(1, first)
    real_get_latency = backend.inference_model.getLatency

    def slow_get_latency():
        time.sleep(SLOW_GET_LATENCY_SECONDS)
        return real_get_latency()

    backend.inference_model.getLatency = slow_get_latency
    source = type("Source", (), {"next_input": lambda self: first})()
    timings = measure(step, source, 3, 1, barrier=lambda: None)
    assert timings.step_seconds.max() < SLOW_GET_LATENCY_SECONDS, timings.step_seconds
    assert len(timings.batch_latency) == 3 and (timings.batch_latency > 0).all()
    assert len(backend.latencies[1]) == 1 + 1 + 3  # every call's reading: compile call, warm-up, timed
    assert list(timings.batch_latency) == [reading[2] for reading in backend.latencies[1][2:]]
