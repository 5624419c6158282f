"""Issue 16's contract for the IPU backend, point by point, against the strict stand-in (tests/fake_poptorch).

Each test pins one thing the code before issue 16 got wrong (or the stand-in let pass): popdist.init
on SDK 2.x and 3.x, Open MPI's mpiexec without poprun, the default cache under poprun, the
--compile-only warning, destroy between sizes, deterministicWorkers, hardware version -1, the
reference harness's figures, and the stand-in's own strictness.
"""
import json
import logging
import re

import numpy as np
import pytest

from test_report import _block_attrs
from ipu_fake import config, fake_sdk, option_calls, poprun_env, prepared_backend, reimport_fake, step_input, world  # noqa: F401,E501


def _set(monkeypatch, values):
    for key, value in values.items():
        monkeypatch.setenv(key, value)


def _run_one(run_config, run_world, batch_size=1, steps=1):
    backend, model = prepared_backend(run_config, run_world)
    first = step_input(run_config, backend, model, batch_size)
    step = backend.make_step(batch_size, first)
    results = [step(first) for _ in range(steps)]
    return backend, results


def _compiled_options(poptorch):
    return [event["kwargs"]["options"] for event in poptorch.calls("PoplarExecutor.compile")]


# ---------------------------------------------------------------- 1: popdist.init by SDK generation


def test_sdk2_popdist_without_init_runs_under_poprun(fake_sdk, monkeypatch):
    monkeypatch.setenv("FAKE_POPTORCH_SDK", "2")
    poptorch = reimport_fake()
    import popdist

    assert not hasattr(popdist, "init")  # as in SDK 2.4: calling it would raise AttributeError
    _set(monkeypatch, poprun_env(instances=2, replicas=2))
    backend, _ = _run_one(config("--device ipu"), world(size=2, local_size=1))
    assert not poptorch.calls("popdist.init")
    assert backend.metadata()["popdist_init"] == "absent (SDK 2.x)"
    assert backend.metadata()["poptorch_version"] == "2.4.0+fake"


def test_sdk3_popdist_init_once_and_never_twice(fake_sdk, monkeypatch):
    poptorch = fake_sdk
    _set(monkeypatch, poprun_env(instances=2, replicas=2))
    from mpirunner.backends.ipu import IpuBackend

    backend = IpuBackend(config("--device ipu"), world(size=2, local_size=1))
    assert [event["call"] for event in poptorch.calls("popdist.init")] == ["popdist.init"]
    assert backend.metadata()["popdist_init"] == "called after MPI_Init"
    # a second backend in the same process (or a user who initialised popdist) must not initialise it again
    again = IpuBackend(config("--device ipu"), world(size=2, local_size=1))
    assert len(poptorch.calls("popdist.init")) == 1 and again.popdist_init == "already initialised"


# ---------------------------------------------------------------- 2: Open MPI's mpiexec without poprun


def test_open_mpi_ranks_without_poprun_stay_independent_graphs(fake_sdk, monkeypatch):
    poptorch = fake_sdk
    _set(monkeypatch, {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1"})  # mpiexec from Open MPI
    _run_one(config("--device ipu"), world(size=2, rank=1, local_size=2))
    assert ("Options.Distributed.disable", [], {}) in option_calls(poptorch)
    [options] = _compiled_options(poptorch)
    assert (options["num_distributed_processes"], options["distributed_process_id"]) == (1, 0)


# ---------------------------------------------------------------- 3: the default cache under poprun


@pytest.mark.parametrize("instances_here, user_cache, expected", [
    (2, None, "default"), (1, None, None), (2, "USER", "USER")], ids=["shared-host", "alone", "user-path"])
def test_executable_cache_under_poprun(fake_sdk, monkeypatch, tmp_path, instances_here, user_cache, expected):
    poptorch = fake_sdk
    _set(monkeypatch, poprun_env(instances=2, replicas=2))
    from mpirunner.backends.ipu import default_cache_path

    user_path = str(tmp_path / "cache")
    flags = "--device ipu" + (f" --model-cache-path {user_path}" if user_cache else "")
    backend, _ = _run_one(config(flags), world(size=2, local_size=instances_here))
    cached = [args for call, args, _ in option_calls(poptorch) if call == "Options.enableExecutableCaching"]
    want = {"default": default_cache_path(), None: None, "USER": user_path}[expected]
    assert cached == ([] if want is None else [[want]])
    report = backend.run_report(1).attrs
    assert report["ipu_executable_cache"] == (want or "")
    assert report["ipu_executable_cache_default"] is (expected == "default")


# ---------------------------------------------------------------- 4: --compile-only outside poprun


def test_compile_only_outside_poprun_warns_and_points_to_offline_mode(fake_sdk, monkeypatch, caplog):
    from mpirunner.backends.ipu import IpuBackend

    logging.getLogger("mpirunner").addHandler(caplog.handler)
    try:
        IpuBackend(config("--device ipu --compile-only --offline-target-ipu-version 2"), world())
        outside = caplog.text
        caplog.clear()
        _set(monkeypatch, poprun_env(instances=2, replicas=2))
        IpuBackend(config("--device ipu --compile-only --offline-target-ipu-version 2"), world(size=2))
    finally:
        logging.getLogger("mpirunner").removeHandler(caplog.handler)
    assert "will not match a poprun run" in outside and "--offline-mode" in outside
    assert "docs/ipu.md" in outside and "docs/backends.md" not in outside  # where the offline recipe is
    assert "will not match" not in caplog.text


# ---------------------------------------------------------------- 5: destroy between batch sizes


def test_sweep_destroys_each_previous_model(fake_sdk):
    poptorch = fake_sdk
    run_config = config("--device ipu --batch-size 1,2,3")
    backend, model = prepared_backend(run_config, world())
    models = []
    for batch_size in run_config.batch_sizes:
        first = step_input(run_config, backend, model, batch_size)
        backend.make_step(batch_size, first)(first)
        models.append(backend.inference_model)
    assert [m.destroyed for m in models] == [True, True, False]  # only the current size keeps its executable
    assert len(poptorch.calls("PoplarExecutor.destroy")) == 2
    with pytest.raises(RuntimeError, match="destroyed"):
        models[0].getLatency()


# ---------------------------------------------------------------- 6 and 7: engine options, hardware version


def test_reference_engine_option_deterministic_workers(fake_sdk):
    poptorch = fake_sdk
    backend, _ = _run_one(config("--device ipu"), world())
    [engine] = [args[1] for call, args, _ in option_calls(poptorch) if args[:1] == ["engineOptions"]]
    assert engine["target.deterministicWorkers"] == "portable"
    assert json.loads(backend.metadata()["ipu_engine_options"])["target.deterministicWorkers"] == "portable"


def test_unknown_hardware_version_runs_on_recorded_as_unknown(fake_sdk, monkeypatch):
    poptorch = fake_sdk
    monkeypatch.setenv("FAKE_POPTORCH_HW_VERSION", "-1")
    backend, _ = _run_one(config("--device ipu"), world(), steps=2)
    assert backend.metadata()["ipu_hardware_version"] == "unknown"
    poptorch.RECORD.clear()
    from mpirunner.backends.ipu import IpuBackend

    compiling = IpuBackend(config("--device ipu --compile-only"), world())  # compiles for the attached IPUs
    assert compiling.offline_ipu_version is None and compiling.metadata()["ipu_offline_target"] == 0
    monkeypatch.setenv("FAKE_POPTORCH_HW_VERSION", "2")
    assert IpuBackend(config("--device ipu"), world()).metadata()["ipu_hardware_version"] == "2"


# ---------------------------------------------------------------- 8: the reference harness's figures


def test_reference_throughput_is_all_samples_over_the_slowest_rank_per_step():
    from mpirunner.stats import reference_throughput, throughput

    seconds = np.array([[0.10, 0.10, 0.10], [0.10, 0.20, 0.40]])  # rank 1 straggles more each step
    starts = np.cumsum(np.hstack([np.zeros((2, 1)), seconds[:, :-1]]), axis=1)
    expected = np.mean([2 * 8 / 0.10, 2 * 8 / 0.20, 2 * 8 / 0.40])
    assert reference_throughput(seconds, 8) == pytest.approx(expected)
    assert reference_throughput(seconds, 8) != pytest.approx(throughput(starts, seconds, 8))
    ragged = np.array([[0.1, 0.1], [0.2, np.nan]])  # a rank with fewer steps counts only where it stepped
    assert reference_throughput(ragged, 8) == pytest.approx(np.mean([16 / 0.2, 8 / 0.1]))


def test_instance_wide_latency_extremes_come_from_every_rank(fake_sdk):
    backend, _ = _run_one(config("--device ipu --warmup-iterations 0"), world(size=3, extremes=[(0.001, 9e3, 5.0, 0.001, 9e3),
                                                                                               (float("nan"),) * 5]),
                          steps=3)
    report = backend.run_report(1)
    mine_low, mine_high = report.per_rank["ipu_rank_latency_min_ms"], report.per_rank["ipu_rank_latency_max_ms"]
    assert 0.001 < mine_low <= mine_high < 9e3
    assert (report.attrs["ipu_latency_min_ms"], report.attrs["ipu_latency_max_ms"]) == (0.001, 9e3)


def test_reference_line_follows_the_harness_lines_and_no_harness_regex_matches_it():
    from mpirunner.runfile.block import format_run_block

    attrs = _block_attrs(throughput_reference=999.25, ipu_latency_min_ms=0.5, ipu_latency_max_ms=7.5)
    lines = format_run_block(attrs, 4).splitlines()
    assert lines[-3:-1] == ["throughput: 1234.57 samples/sec", "latency avg: 2.250 ms"]
    assert "999.25 samples/sec" in lines[-1] and "min 0.500 ms, max 7.500 ms" in lines[-1]
    assert not re.search(r"throughput: *(.*?) samples\/sec", lines[-1])
    assert not re.search(r"latency avg: *(.*?) ms", lines[-1])
    without = {key: value for key, value in attrs.items() if not key.startswith("ipu_")}
    assert format_run_block(without, 4).splitlines()[-1] == "latency avg: 2.250 ms"  # CPU/CUDA: unchanged


# ---------------------------------------------------------------- 9: the stand-in is as strict as the library


def test_stand_in_reads_only_what_poprun_exports(fake_sdk, monkeypatch):
    import popdist

    monkeypatch.setenv("POPDIST_NUM_INSTANCES", "4")  # not exported by a real poprun: means nothing
    assert not popdist.isPopdistEnvSet()
    _set(monkeypatch, poprun_env(instances=4, replicas=8, rank=3))
    assert popdist.isPopdistEnvSet()
    assert (popdist.getNumInstances(), popdist.getNumLocalReplicas(), popdist.getInstanceIndex()) == (4, 2, 3)


@pytest.mark.parametrize("call", ["replicationFactor(2)", "useIpuId(0)", "Distributed.disable()",
                                  "Distributed.configureProcessId(0, 2)"])
def test_popdist_options_forbid_what_poprun_decides(fake_sdk, monkeypatch, call):
    _set(monkeypatch, poprun_env(instances=2, replicas=2))
    import popdist.poptorch

    options = popdist.poptorch.Options(ipus_per_replica=1)
    with pytest.raises(RuntimeError, match="popdist.poptorch.Options"):
        eval(f"options.{call}")  # noqa: S307 (fixed strings above)


def test_ipu_synthetic_data_latency_is_marked_without_meaning(fake_sdk):
    """The 3.4 reference says only "ignore these latency values" with synthetic data: whatever getLatency()
    returns then, the run says the values mean nothing and does not weigh device busy with them."""
    backend, results = _run_one(config("--device ipu --data synthetic"), world(), steps=2)
    assert all(len(latencies) == 1 for _, latencies in results)
    assert not backend.batch_latency_is_device_time()
    assert backend.run_report(1).attrs["latency_meaningful"] is False
