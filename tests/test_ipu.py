"""IPU backend, proven against the recording poptorch/popdist stand-in in tests/fake_poptorch (no IPU here).

The four reference command lines (poprun --num-instances=4 --num-replicas=4 --ipus-per-replica=1) are
resolved exactly as the CLI resolves them; poprun is simulated through the environment a real poprun
exports (ipu_fake.poprun_env). The contract points of issue 16 are in test_ipu_contract.py. The options each line sets, its input dtype and shape, the model dtype, the IO overlap
wrapping and the engine options are checked against what the stand-in recorded. The networks are
swapped for resnet18 at 32 px (the options do not depend on the network) to keep the tests fast.
"""
import json
import logging
import os
import sys
from pathlib import Path

import pytest

from conftest import TINY, run_cli

from ipu_fake import FAKE, poprun_env
from ipu_fake import config as _config
from ipu_fake import fake_env as _fake_env
from ipu_fake import fake_sdk  # noqa: F401  (fixture)
from ipu_fake import option_calls as _option_calls
from ipu_fake import prepared_backend as _prepared_backend
from ipu_fake import step_input as _step_input
from ipu_fake import world as _world

POPRUN_4X4 = poprun_env(instances=4, replicas=4)
# The reference README's lines, after `python run_benchmark.py`, with {batchsize} = 1; expected IO tiles.
REFERENCE_LINES = {
    "resnet50": ("--config resnet50-mk2 --data generated --batch-size 1 --iterations 20 --num-io-tiles 64", 64),
    "efficientnet-b0": ("--config efficientnet-b0-mk2 --data generated --batch-size 1 --iterations 20 "
                        "--num-io-tiles 64", 64),
    "efficientnet-b4": ("--config efficientnet-b4-mk2 --data generated --batch-size 1 --iterations 20 "
                        "--num-io-tiles 0", 0),
    "resnext101": ("--data generated --batch-size 1 --model resnext101 --device-iterations 128 --norm-type batch "
                   "--precision 16.16 --half-partial --eight-bit-io --normalization-location ipu --iterations 20 "
                   "--num-io-tiles 32", 32),
}
USER_ENGINE_OPTIONS = {"debug.instrument": "true"}


# ---------------------------------------------------------------- the four reference lines


@pytest.mark.parametrize("min_latency", [False, True], ids=["default", "min-latency"])
@pytest.mark.parametrize("line", sorted(REFERENCE_LINES))
def test_reference_line_under_poprun(fake_sdk, monkeypatch, line, min_latency):
    poptorch = fake_sdk
    for key, value in POPRUN_4X4.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("POPLAR_ENGINE_OPTIONS", json.dumps(USER_ENGINE_OPTIONS))
    command_line, io_tiles = REFERENCE_LINES[line]
    config = _config(command_line + (" --min-latency" if min_latency else ""))

    from mpirunner.backends import select_backend_name

    assert select_backend_name(config.device) == "ipu"  # the lines give no --device: auto finds the IPUs
    backend, model = _prepared_backend(config, _world(size=4))
    assert backend.local_replicas() == 1
    step_input = _step_input(config, backend, model, batch_size=1)
    step = backend.make_step(1, step_input)
    outputs, latencies = step(step_input)

    mpi = sys.modules.get("mpi4py.MPI")  # initialised when an earlier test of this process started MPI
    expected = [("popdist.init", [], {"mpi_initialised": bool(mpi and mpi.Is_initialized())}),
                ("popdist.poptorch.Options", [], {"ipus_per_replica": 1}),
                ("Options.deviceIterations", [128], {}),
                ("Options.Precision.setPartialsType", ["torch.float16"], {})]
    if io_tiles:
        expected += [("Options.setExecutionStrategy", ["ShardedExecution"], {}),
                     ("Options._Popart.set", ["defaultBufferingDepth", 3], {}),
                     ("Options.TensorLocations.numIOTiles", [io_tiles], {})]
    from mpirunner.backends.ipu import default_cache_path

    expected += [("Options.enableExecutableCaching", [default_cache_path()], {})]  # 4 instances on one host
    expected += [("Options._Popart.set", ["groupNormStridedChannelGrouping", False], {})]  # the reference's default
    expected += [("Options._Popart.set", ["engineOptions", {"opt.internalExchangeOptimisationTarget": "cycles",
                                                            "target.deterministicWorkers": "portable"}], {})]
    assert _option_calls(poptorch) == expected

    compiles = poptorch.calls("PoplarExecutor.compile")
    assert len(compiles) == 1 and not poptorch.calls("PoplarExecutor.implicit_compile")
    compiled = compiles[0]
    assert compiled["args"] == [{"tensor": "torch.uint8", "shape": [1 * 128 * 1, 3, 32, 32]}]
    assert compiled["kwargs"]["model_dtype"] == "torch.float16"
    assert compiled["kwargs"]["replication_factor"] == 1
    assert poptorch.RECORD.index(compiled) < poptorch.RECORD.index(poptorch.calls("PoplarExecutor.__call__")[0])
    assert len(poptorch.calls("PoplarExecutor.__call__")) == 1

    overlap = poptorch.calls("set_overlap_for_")
    if io_tiles:
        assert [(event["call"], event["args"][-1]) for event in overlap] == [
            ("set_overlap_for_input", "OverlapMode.OverlapAccumulationLoop"),
            ("set_overlap_for_output", "OverlapMode.OverlapAccumulationLoop")]
        assert overlap[0]["args"][0] == {"tensor": "torch.uint8", "shape": [1, 3, 32, 32]}  # traced per micro-batch
    else:
        assert overlap == []

    engine_env = json.loads(compiled["kwargs"]["poplar_engine_options"])
    if min_latency:
        assert engine_env == {**USER_ENGINE_OPTIONS, "exchange.enablePrefetch": "false"}
    else:
        assert engine_env == USER_ENGINE_OPTIONS
    metadata = backend.metadata()
    assert json.loads(metadata["poplar_engine_options_env"]) == engine_env
    assert json.loads(metadata["ipu_engine_options_effective"]) == {
        "opt.internalExchangeOptimisationTarget": "cycles", "target.deterministicWorkers": "portable", **engine_env}

    assert outputs.dtype == model.compute_dtype == __import__("torch").float16
    assert tuple(outputs.shape) == (128, 1000)
    assert len(latencies) == 1 and latencies[0] > 0
    assert {key: metadata[key] for key in ("ipu_count", "ipus_per_replica", "local_replicas", "total_replicas",
                                           "popdist", "poptorch_version", "popart_version")} == {
        "ipu_count": 4, "ipus_per_replica": 1, "local_replicas": 1, "total_replicas": 4, "popdist": True,
        "poptorch_version": poptorch.__version__, "popart_version": "3.3.0+fake"}


# ---------------------------------------------------------------- without poprun, and the other options


def test_plain_options_replication_cache_synthetic_and_exchange_target(fake_sdk, tmp_path):
    poptorch = fake_sdk
    cache = str(tmp_path / "cache")
    config = _config(f"--device ipu --replicas 2 --device-iterations 3 --batch-size 2 --data synthetic "
                     f"--model-cache-path {cache} --exchange-memory-target memory --precision 16.16")
    backend, model = _prepared_backend(config, _world(size=2))
    assert backend.local_replicas() == 2
    step_input = _step_input(config, backend, model, batch_size=2)
    assert step_input.shape[0] == 2 * 3 * 2 and step_input.dtype == __import__("torch").float16
    step = backend.make_step(2, step_input)
    step(step_input)
    assert _option_calls(poptorch) == [
        ("poptorch.Options", [], {}), ("Options.Distributed.disable", [], {}), ("Options.replicationFactor", [2], {}),
        ("Options.deviceIterations", [3], {}),
        ("Options.Precision.setPartialsType", ["torch.float32"], {}),
        ("Options.enableExecutableCaching", [cache], {}), ("Options.enableSyntheticData", [True], {}),
        ("Options._Popart.set", ["groupNormStridedChannelGrouping", False], {}),
        ("Options._Popart.set", ["engineOptions", {"opt.internalExchangeOptimisationTarget": "memory",
                                                   "target.deterministicWorkers": "portable"}], {})]
    assert poptorch.calls("set_overlap_for_") == []
    assert backend.compiles_ahead() and not backend.measures_peak()  # capabilities from the option table
    metadata = backend.metadata()
    assert (metadata["total_replicas"], metadata["ipu_count"], metadata["popdist"]) == (4, 4, False)
    assert json.loads(metadata["poplar_engine_options_env"]) == {}  # nothing set, nothing invented
    report = backend.run_report(2)
    assert set(report.per_rank) == {"ipu_rank_latency_min_ms", "ipu_rank_latency_max_ms"}
    info = report.attrs
    assert info["latency_meaningful"] is False and "not meaningful" in info["latency_note"]


def test_poprun_total_replicas_overriding_replicas_warns(fake_sdk, monkeypatch, caplog):
    for key, value in poprun_env(instances=2, replicas=8).items():
        monkeypatch.setenv(key, value)
    logging.getLogger("mpirunner").addHandler(caplog.handler)
    try:
        from mpirunner.backends.ipu import IpuBackend

        backend = IpuBackend(_config("--device ipu --replicas 1"), _world(size=2))
    finally:
        logging.getLogger("mpirunner").removeHandler(caplog.handler)
    assert backend.local_replicas() == 4
    assert "poprun runs 8 replicas in all (4 per instance); --replicas 1 is overridden" in caplog.text


def test_latency_from_get_latency_and_explicit_compile_time(fake_sdk):
    config = _config("--device ipu --batch-size 1 --device-iterations 2 --warmup-iterations 1")
    backend, model = _prepared_backend(config, _world())
    step_input = _step_input(config, backend, model, batch_size=1)
    step = backend.make_step(1, step_input)
    assert step.output_lag_steps == 0 and step.reuses_outputs  # the step contract of backends/base.py
    assert backend.compile_seconds == {}  # the step's first call compiles (bench times it as compile_seconds)
    reported = []
    for _ in range(4):
        _, latencies = step(step_input)
        reported.append((backend.inference_model.getLatency(), latencies))
    for (min_s, max_s, avg_s), latencies in reported:
        assert latencies == [avg_s] and min_s <= avg_s <= max_s
    assert backend.compile_seconds[1] > 0
    info = backend.run_report(1).attrs
    timed = [triple for triple, _ in reported[2:]]  # after the compile call and one warm-up step
    assert info["ipu_latency_min_ms"] == pytest.approx(1000 * min(t[0] for t in timed))
    assert info["ipu_latency_max_ms"] == pytest.approx(1000 * max(t[1] for t in timed))
    assert info["latency_meaningful"] is True and info["ipu_compile_seconds"] == backend.compile_seconds[1]


def test_sweep_detaches_the_previous_model_before_the_next(fake_sdk):
    poptorch = fake_sdk
    config = _config("--device ipu --batch-size 1,2")
    backend, model = _prepared_backend(config, _world())
    for batch_size in (1, 2):
        step_input = _step_input(config, backend, model, batch_size)
        backend.make_step(batch_size, step_input)(step_input)
    assert [event["call"] for event in poptorch.RECORD if event["call"] in (
        "poptorch.inferenceModel", "PoplarExecutor.detachFromDevice", "PoplarExecutor.destroy")] == [
        "poptorch.inferenceModel", "PoplarExecutor.detachFromDevice", "PoplarExecutor.destroy",
        "poptorch.inferenceModel"]
    assert [event["args"][0]["shape"][0] for event in poptorch.calls("PoplarExecutor.compile")] == [1, 2]


@pytest.mark.parametrize("flags, message", [
    ("--num-io-tiles 16", "even number from 32 to 192"),
    ("--num-io-tiles 33", "even number from 32 to 192"),
    ("--half-dtype bfloat16", "float16"),
])
def test_options_poptorch_would_reject_are_usage_errors(fake_sdk, flags, message):
    from mpirunner.backends.ipu import IpuBackend
    from mpirunner.errors import UsageError

    with pytest.raises(UsageError, match=message):
        IpuBackend(_config(f"--device ipu {flags}"), _world())


def test_without_hardware_only_offline_compilation_is_possible(fake_sdk, monkeypatch):
    poptorch = fake_sdk
    monkeypatch.setenv("FAKE_POPTORCH_HARDWARE", "0")
    from mpirunner.backends.ipu import IpuBackend
    from mpirunner.errors import UsageError

    with pytest.raises(UsageError, match="--compile-only --offline-target-ipu-version"):
        IpuBackend(_config("--device ipu"), _world())
    with pytest.raises(UsageError, match="needs --offline-target-ipu-version"):
        IpuBackend(_config("--device ipu --compile-only"), _world())
    config = _config("--device ipu --compile-only --offline-target-ipu-version 2")
    backend, model = _prepared_backend(config, _world())
    backend.make_step(1, _step_input(config, backend, model, 1))  # compiles at once
    assert ("Options.useOfflineIpuTarget", [2], {}) in _option_calls(poptorch)
    assert len(poptorch.calls("PoplarExecutor.compile")) == 1 and not poptorch.calls("PoplarExecutor.__call__")


def test_min_latency_rejects_engine_options_that_are_not_json(fake_sdk, monkeypatch):
    monkeypatch.setenv("POPLAR_ENGINE_OPTIONS", "exchange.enablePrefetch=false")
    from mpirunner.backends.ipu import IpuBackend
    from mpirunner.errors import UsageError

    with pytest.raises(UsageError, match="POPLAR_ENGINE_OPTIONS is not valid JSON"):
        IpuBackend(_config("--device ipu --min-latency"), _world())


# ---------------------------------------------------------------- selection


def test_auto_never_picks_ipu_without_poptorch(monkeypatch):
    from mpirunner.backends import select_backend_name
    from mpirunner.backends.ipu import hardware_available

    monkeypatch.setitem(sys.modules, "poptorch", None)  # import poptorch -> ImportError
    assert hardware_available() is False
    assert select_backend_name("auto", cuda_available=lambda: False) == "cpu"


def test_auto_picks_ipu_only_when_poptorch_reports_hardware(fake_sdk, monkeypatch):
    from mpirunner.backends import select_backend_name

    assert select_backend_name("auto", cuda_available=lambda: False) == "ipu"
    monkeypatch.setenv("FAKE_POPTORCH_HARDWARE", "0")
    assert select_backend_name("auto", cuda_available=lambda: False) == "cpu"


def _env_without_fake():
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and "fake_poptorch" not in p]
    return {"PYTHONPATH": os.pathsep.join(paths)}


def test_device_ipu_without_poptorch_is_one_line_error(tmp_path):
    output = tmp_path / "never.h5"
    result = run_cli([*TINY, "--device", "ipu", "--iterations", "2", "--output", output], env=_env_without_fake())
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("mpirunner: error:")]
    assert len(errors) == 1 and "poptorch" in errors[0] and "Traceback" not in result.stderr
    assert not output.exists()


def test_compile_only_with_auto_means_ipu_never_a_cpu_benchmark(tmp_path):
    output = tmp_path / "never.h5"
    result = run_cli([*TINY, "--compile-only", "--iterations", "2", "--output", output], env=_env_without_fake())
    assert result.returncode == 2, result.stderr
    assert "poptorch" in result.stderr and "throughput:" not in result.stdout
    assert not output.exists()


# ---------------------------------------------------------------- end to end through the CLI


def _read_record(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_cli_under_simulated_poprun_two_instances(tmp_path):
    import h5py

    record, output = tmp_path / "record.jsonl", tmp_path / "ipu.h5"
    poprun = {key: value for key, value in poprun_env(instances=2, replicas=4).items()
              if key.startswith("POPDIST_") and key not in ("POPDIST_LOCAL_INSTANCE_INDEX",
                                                            "POPDIST_REPLICA_INDEX_OFFSET")}
    env = _fake_env(record, POPLAR_ENGINE_OPTIONS=json.dumps(USER_ENGINE_OPTIONS), **poprun)
    result = run_cli([*TINY, "--batch-size", "1", "--device-iterations", "2", "--replicas", "2", "--iterations", "2",
                      "--min-iterations", "2", "--precision", "16.16", "--eight-bit-io", "--num-io-tiles", "64",
                      "--min-latency", "--output", output], ranks=2, env=env)
    assert result.returncode == 0, result.stderr
    with h5py.File(output) as h5:
        attrs = dict(h5.attrs)
        run = h5["runs/bs00001"]
        assert (attrs["backend"], attrs["launcher"], attrs["poptorch_version"]) == ("ipu", "poprun", "3.3.0+fake")
        assert (attrs["local_replicas"], attrs["total_replicas"], attrs["ipu_count"], attrs["ipus_per_replica"]) == (
            2, 4, 4, 1)
        assert json.loads(attrs["poplar_engine_options_env"]) == {**USER_ENGINE_OPTIONS,
                                                                  "exchange.enablePrefetch": "false"}
        assert run.attrs["samples_per_step"] == 1 * 2 * 2
        assert run["batch_latency"].shape == (2, 2) and (run["batch_latency"][()] > 0).all()
        assert (run["compile_seconds"][()] > 0).all()
        # the reference harness's figures, recomputed from the stored arrays (issue 16, point 8)
        seconds = run["step_seconds"][()]
        per_step = 2 * run.attrs["samples_per_step"] / seconds.max(axis=0)  # all instances / the slowest
        assert run.attrs["throughput_reference"] == pytest.approx(per_step.mean(), rel=1e-9)
        assert run.attrs["throughput_reference"] != pytest.approx(run.attrs["throughput"], rel=1e-6)
        lows, highs = run["ipu_rank_latency_min_ms"][()], run["ipu_rank_latency_max_ms"][()]
        assert lows.shape == highs.shape == (2,) and lows[0] != lows[1]  # every rank's own, not rank 0's twice
        assert (run.attrs["ipu_latency_min_ms"], run.attrs["ipu_latency_max_ms"]) == (lows.min(), highs.max())
        # two instances on this host and no --model-cache-path: the default cache, said in the run block
        assert run.attrs["ipu_executable_cache_default"] and run.attrs["ipu_executable_cache"] == attrs[
            "ipu_executable_cache"] != ""
        throughput = run.attrs["throughput"]
    block = result.stdout[result.stdout.index("== resnet18 batch 1"):].splitlines()
    assert any(line.startswith("ipu cache: ") for line in block)
    harness_throughput = [line for line in block if "throughput:" in line]
    assert block.index(harness_throughput[0]) + 2 == next(
        index for index, line in enumerate(block) if line.startswith("reference harness definition:"))
    assert harness_throughput[0] == f"throughput: {throughput:.2f} samples/sec"  # the harness's first match
    events = _read_record(record)
    for rank in (0, 1):
        mine = [event for event in events if event["rank"] == rank]
        assert [event["call"] for event in mine[:2]] == ["popdist.init", "popdist.poptorch.Options"]
        assert mine[0]["kwargs"] == {"mpi_initialised": True}  # mpi4py's MPI_Init came first
        compiled = [event for event in mine if event["call"] == "PoplarExecutor.compile"]
        assert len(compiled) == 1 and compiled[0]["args"][0] == {"tensor": "torch.uint8", "shape": [4, 3, 32, 32]}
        assert compiled[0]["kwargs"]["replication_factor"] == 2
        options = compiled[0]["kwargs"]["options"]
        assert (options["num_distributed_processes"], options["distributed_process_id"]) == (2, rank)


def test_cli_compile_only_builds_the_cache_and_measures_nothing(tmp_path):
    record, output, cache = tmp_path / "record.jsonl", tmp_path / "never.h5", tmp_path / "cache"
    result = run_cli([*TINY, "--device", "ipu", "--batch-size", "1,2", "--compile-only",
                      "--offline-target-ipu-version", "2", "--model-cache-path", cache, "--output", output],
                     env=_fake_env(record, FAKE_POPTORCH_HARDWARE="0"))
    assert result.returncode == 0, result.stderr
    assert "--compile-only" in result.stdout and not output.exists()
    calls = [(event["call"], event["args"]) for event in _read_record(record)]
    assert calls.count(("Options.useOfflineIpuTarget", [2])) == 2
    assert calls.count(("Options.enableExecutableCaching", [str(cache)])) == 2
    assert [args[0]["shape"][0] for call, args in calls if call == "PoplarExecutor.compile"] == [1, 2]
    assert not any(call == "PoplarExecutor.__call__" for call, _ in calls)
