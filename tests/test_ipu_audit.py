"""Issue 26's audit of the IPU backend against the real poptorch, popdist, PopART and the reference harness.

Each test pins one behaviour of the real library or harness (the source it comes from is named in
docs/ipu.md) that the backend or the stand-in in tests/fake_poptorch did not follow before.
"""
import pytest

from ipu_fake import config, fake_sdk, poprun_env, prepared_backend, step_input, world  # noqa: F401

GET_LATENCY_CLOCK_NS = 10 * 10**9


# ---------------------------------------------------------------- 3: getLatency() outside the timed window


def test_ipu_get_latency_is_read_after_the_timed_step(fake_sdk, monkeypatch):
    """The reference stops its clock right after the model call. bench.py's clock is replaced by one that moves
    only when getLatency() is called (by 10 s): a timed step that contains the call lasts 10 s, else 0."""
    from types import SimpleNamespace

    from mpirunner import bench

    run_config = config("--device ipu --batch-size 1 --iterations 3 --warmup-iterations 1")
    backend, model = prepared_backend(run_config, world())
    first = step_input(run_config, backend, model, 1)
    step = backend.make_step(1, first)
    real_get_latency = backend.inference_model.getLatency
    clock_ns = [0]

    def get_latency_that_moves_the_clock():
        clock_ns[0] += GET_LATENCY_CLOCK_NS
        return real_get_latency()

    backend.inference_model.getLatency = get_latency_that_moves_the_clock
    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter_ns=lambda: clock_ns[0]))
    source = SimpleNamespace(next_input=lambda: first)
    timings = bench.measure(step, source, 3, 1, barrier=lambda: None)
    assert list(timings.step_seconds) == [0.0, 0.0, 0.0]
    assert len(timings.batch_latency) == 3 and (timings.batch_latency > 0).all()
    assert clock_ns[0] == 5 * GET_LATENCY_CLOCK_NS  # read once per call: compile call, warm-up, 3 timed
    assert len(backend.latencies[1]) == 1 + 1 + 3
    assert list(timings.batch_latency) == [reading[2] for reading in backend.latencies[1][2:]]


# ---------------------------------------------------------------- 1: POPTORCH_CACHE_DIR, then the default


def _compiled_caches(poptorch):
    return [event["kwargs"]["options"].get("executable_cache") for event in poptorch.calls("PoplarExecutor.compile")]


def _one_step(run_config, run_world, batch_size=1):
    backend, model = prepared_backend(run_config, run_world)
    first = step_input(run_config, backend, model, batch_size)
    backend.make_step(batch_size, first)(first)
    return backend


def test_ipu_poptorch_cache_dir_is_used_and_recorded(fake_sdk, monkeypatch, tmp_path):
    """poptorch.Options() turns caching on from POPTORCH_CACHE_DIR: the file must say which folder was used."""
    monkeypatch.setenv("POPTORCH_CACHE_DIR", str(tmp_path / "user"))
    backend = _one_step(config("--device ipu"), world())
    assert _compiled_caches(fake_sdk) == [str(tmp_path / "user")]
    metadata, attrs = backend.metadata(), backend.run_report(1).attrs
    for record in (metadata, attrs):
        assert record["ipu_executable_cache"] == str(tmp_path / "user")
        assert record["ipu_executable_cache_source"] == "POPTORCH_CACHE_DIR"
    from mpirunner.runfile.block import format_run_block
    from test_report import _block_attrs

    block = format_run_block(_block_attrs(**attrs), 4)
    assert f"ipu cache: {tmp_path / 'user'} (from POPTORCH_CACHE_DIR)" in block.splitlines()


@pytest.mark.parametrize("flag, expected, source", [
    ("", "user", "POPTORCH_CACHE_DIR"),                      # the variable beats mpirunner's default
    ("--model-cache-path {tmp}/flag", "flag", "--model-cache-path"),  # the flag beats the variable
])
def test_ipu_cache_precedence_under_poprun_on_one_host(fake_sdk, monkeypatch, tmp_path, flag, expected, source):
    for key, value in poprun_env(instances=4, replicas=4).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("POPTORCH_CACHE_DIR", str(tmp_path / "user"))
    backend = _one_step(config(f"--device ipu {flag.format(tmp=tmp_path)}"), world(size=4, local_size=4))
    assert _compiled_caches(fake_sdk) == [str(tmp_path / expected)]
    assert (backend.cache_path, backend.cache_source) == (str(tmp_path / expected), source)


# ---------------------------------------------------------------- 2: poptorch's compile lock


def _sweep_positions(monkeypatch, tmp_path, hosts, flags=""):
    """Four poprun instances on `hosts` hosts (each with its own temporary folder), batch sizes 1 and 2, run one
    rank after the other in this process: the compile lock position of each rank's compile, per batch size."""
    import tempfile

    from ipu_fake import fake_poptorch

    per_host = 4 // hosts
    backends, positions = [], {}
    for rank in range(4):
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / f"host{rank // per_host}"))
        for key, value in poprun_env(instances=4, replicas=4, rank=rank).items():
            monkeypatch.setenv(key, value)
        backends.append(prepared_backend(config(f"--device ipu --batch-size 1,2 {flags}"),
                                         world(size=4, rank=rank, local_size=per_host)))
    poptorch = fake_poptorch()
    for batch_size in (1, 2):
        for rank, (backend, model) in enumerate(backends):
            monkeypatch.setenv("OMPI_COMM_WORLD_RANK", str(rank))
            monkeypatch.setenv("POPDIST_REPLICA_INDEX_OFFSET", str(rank))
            first = step_input(backend.config, backend, model, batch_size)
            backend.make_step(batch_size, first)(first)
        positions[batch_size] = [event["kwargs"]["lock_position"] for event in poptorch.calls("PoplarExecutor.compile")]
        poptorch.RECORD.clear()
    return backends, positions


def _lock_files(tmp_path):
    return sorted(path.name for path in tmp_path.rglob("*.lock"))


def test_ipu_no_compile_storm_on_several_hosts_without_a_shared_cache(fake_sdk, monkeypatch, tmp_path, caplog):
    """Two hosts x two instances, no cache given: a host-local default cache never reaches the lock's count of
    four, so on the next batch size no instance is first and all compile at once. No default there, a warning."""
    import logging

    logging.getLogger("mpirunner").addHandler(caplog.handler)
    try:
        backends, positions = _sweep_positions(monkeypatch, tmp_path, hosts=2)
    finally:
        logging.getLogger("mpirunner").removeHandler(caplog.handler)
    for batch_size, seen in positions.items():
        assert 0 in seen or seen.count(1) == len(set(backend.cache_path for backend, _ in backends)), (batch_size, seen)
    assert _lock_files(tmp_path) == []  # no lock left behind to shift the next job's positions
    assert backends[0][0].cache_source == ""
    assert "several hosts and no executable cache is set" in caplog.text


def test_ipu_shared_cache_on_several_hosts_one_instance_compiles_first(fake_sdk, monkeypatch, tmp_path):
    _, positions = _sweep_positions(monkeypatch, tmp_path, hosts=2, flags=f"--model-cache-path {tmp_path}/shared")
    assert positions == {1: [1, 2, 3, 4], 2: [1, 2, 3, 4]}
    assert _lock_files(tmp_path) == []


def test_ipu_stale_compile_lock_is_named_before_compiling(fake_sdk, monkeypatch, tmp_path, caplog):
    """A job killed mid-compile leaves a lock file whose count shifts every position: nobody compiles first."""
    import logging

    cache = tmp_path / "shared"
    cache.mkdir()
    (cache / "0123abcd.lock").write_text("00")
    logging.getLogger("mpirunner").addHandler(caplog.handler)
    try:
        for key, value in poprun_env(instances=2, replicas=2).items():
            monkeypatch.setenv(key, value)
        from mpirunner.backends.ipu import IpuBackend

        IpuBackend(config(f"--device ipu --model-cache-path {cache}"), world(size=2, local_size=2))
    finally:
        logging.getLogger("mpirunner").removeHandler(caplog.handler)
    lines = {record.getMessage() for record in caplog.records if "0123abcd.lock" in record.getMessage()}
    assert len(lines) == 1 and str(cache) in lines.pop()  # one line, naming the file and the folder


# ---------------------------------------------------------------- 6: --ipus-per-replica other than 1


def test_ipu_poprun_ipus_per_replica_2_is_refused_on_every_rank_before_any_model(tmp_path):
    """The reference passes len(pipeline_splits)+1; mpirunner never splits the model, so 2 would be a lie."""
    import json
    from pathlib import Path

    from conftest import TINY, run_cli
    from ipu_fake import fake_env

    record = tmp_path / "record.jsonl"
    poprun = {key: value for key, value in poprun_env(instances=2, replicas=2, ipus_per_replica=2).items()
              if key.startswith("POPDIST_") and key not in ("POPDIST_LOCAL_INSTANCE_INDEX",
                                                            "POPDIST_REPLICA_INDEX_OFFSET")}
    result = run_cli([*TINY, "--batch-size", "1", "--output", tmp_path / "never.h5"], ranks=2,
                     env=fake_env(record, **poprun))
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "--ipus-per-replica 2" in line]
    assert len(errors) == 1 and "use --ipus-per-replica 1" in errors[0], result.stderr  # one line (rank 0)
    calls = [json.loads(line) for line in Path(record).read_text().splitlines()] if record.exists() else []
    assert {event["rank"] for event in calls if event["call"] == "popdist.init"} <= {0, 1}
    assert not [event for event in calls if event["call"] in ("poptorch.inferenceModel", "popdist.poptorch.Options")]
    assert not (tmp_path / "never.h5").exists()


def test_ipu_ipus_per_replica_refusal_is_a_usage_error_on_each_rank(fake_sdk, monkeypatch):
    from mpirunner.backends.ipu import IpuBackend
    from mpirunner.errors import UsageError

    for rank in (0, 1):
        for key, value in poprun_env(instances=2, replicas=2, ipus_per_replica=2, rank=rank).items():
            monkeypatch.setenv(key, value)
        with pytest.raises(UsageError, match="--ipus-per-replica 2"):
            IpuBackend(config("--device ipu"), world(size=2, rank=rank))
    assert not fake_sdk.calls("poptorch.inferenceModel")


# ---------------------------------------------------------------- 8: groupNormStridedChannelGrouping


@pytest.mark.parametrize("flag, expected", [("", False), ("--enable-fast-groupnorm", True)])
def test_ipu_group_norm_strided_channel_grouping_is_set_as_the_reference_sets_it(fake_sdk, flag, expected):
    """The reference sets it unconditionally to --enable-fast-groupnorm (off by default)."""
    _one_step(config(f"--device ipu --norm-type group {flag}"), world())
    [options] = [event["kwargs"]["options"] for event in fake_sdk.calls("PoplarExecutor.compile")]
    assert options["popart"]["groupNormStridedChannelGrouping"] is expected


def test_ipu_fast_groupnorm_flag_is_ipu_only_and_off_by_default():
    from mpirunner.options import BY_DEST, DEFAULTS

    assert DEFAULTS["enable_fast_groupnorm"] is False and BY_DEST["enable_fast_groupnorm"].devices == {"ipu"}


# ---------------------------------------------------------------- 7: the buffering depth option's name


@pytest.mark.parametrize("sdk, name", [("2", "defaultPrefetchBufferingDepth"), ("3", "defaultBufferingDepth")])
def test_ipu_buffering_depth_option_named_as_the_installed_popart_names_it(fake_sdk, monkeypatch, sdk, name):
    """PopART 2.5 renamed it; the old name still works there with a deprecation warning, the new one not in 2.4."""
    from ipu_fake import reimport_fake

    monkeypatch.setenv("FAKE_POPTORCH_SDK", sdk)
    poptorch = reimport_fake()
    _one_step(config("--device ipu --num-io-tiles 64"), world())
    [options] = [event["kwargs"]["options"] for event in poptorch.calls("PoplarExecutor.compile")]
    assert options["popart"][name] == 3
    assert {"defaultBufferingDepth", "defaultPrefetchBufferingDepth"} & set(options["popart"]) == {name}
    assert poptorch.calls("popart.warning") == []


def test_ipu_buffering_depth_name_by_version():
    from mpirunner.backends.ipu import buffering_depth_option

    assert [buffering_depth_option(v) for v in [(2, 4, 0), (2, 5, 1), (3, 4, 0), ()]] == [
        "defaultPrefetchBufferingDepth", "defaultBufferingDepth", "defaultBufferingDepth",
        "defaultPrefetchBufferingDepth"]


# ---------------------------------------------------------------- 5 and 4: both harness eras parse one real run

# SDK 2.4 (32fc7bd inference/run_benchmark.py logged these two lines; a scraper of that era reads them)
ERA_2_4 = {"throughput": r"Throughput at bs=(\d+), data_mode=(\w+), data_type=([\w.]+), num_ipus=(\d+), of (\S+): "
                         r"min=(.*?) imgs/s, max=(.*?) imgs/s, mean=(.*?) imgs/s, std=(.*?) imgs/s\.",
           "latency": r"Latency: min=(.*?) ms, max=(.*?) ms, mean=(.*?) ms\."}
# graphcore/examples vision/cnns/pytorch/inference/benchmarks.yml: SDK 2.6 (09b7c67), SDK 3.0-3.3 (8ae588c..bf12eaa)
ERA_2_6 = {"throughput": r"throughput: *(.*?) samples\/sec", "latency": r"latency: *(.*?) ms"}
ERA_3 = {"throughput": r"throughput: *(.*?) samples\/sec", "latency": r"latency avg: *(.*?) ms"}


def test_ipu_run_output_parses_with_every_harness_era_regexes(tmp_path):
    import re

    import h5py
    import numpy as np

    from conftest import TINY, run_cli
    from ipu_fake import fake_env

    output = tmp_path / "ipu.h5"
    poprun = {key: value for key, value in poprun_env(instances=2, replicas=2).items()
              if key.startswith("POPDIST_") and key not in ("POPDIST_LOCAL_INSTANCE_INDEX",
                                                            "POPDIST_REPLICA_INDEX_OFFSET")}
    result = run_cli([*TINY, "--batch-size", "2", "--iterations", "4", "--min-iterations", "4", "--precision",
                      "16.16", "--no-progress", "--output", output], ranks=2,
                     env=fake_env(tmp_path / "r.jsonl", **poprun))
    assert result.returncode == 0, result.stderr
    with h5py.File(output) as h5:
        run = h5["runs/bs00002"]
        attrs, seconds = dict(run.attrs), run["step_seconds"][()]
    text = result.stdout
    assert float(re.search(ERA_3["throughput"], text).group(1)) == pytest.approx(attrs["throughput"], rel=1e-3)
    assert float(re.search(ERA_3["latency"], text).group(1)) == pytest.approx(attrs["latency_mean"], rel=1e-3)
    assert float(re.search(ERA_2_6["throughput"], text).group(1)) == pytest.approx(attrs["throughput"], rel=1e-3)
    assert float(re.search(ERA_2_6["latency"], text).group(1)) == attrs["latency_reference_ms"]
    bs, data, dtype, ipus, model, *throughputs = re.search(ERA_2_4["throughput"], text).groups()
    assert (int(bs), data, dtype, int(ipus), model) == (2, "generated", "torch.float16", 2, attrs["model"])
    per_step = 2 * attrs["samples_per_step"] / seconds.max(axis=0)  # the reference's formula, from the file
    expected = [per_step.min(), per_step.max(), per_step.mean(), per_step.std()]
    assert [float(value) for value in throughputs] == pytest.approx(expected, rel=1e-9)
    assert float(throughputs[2]) == pytest.approx(attrs["throughput_reference"], rel=1e-12)
    low, high, mean = (float(value) for value in re.search(ERA_2_4["latency"], text).groups())
    assert (low, high, mean) == (attrs["latency_reference_min_ms"], attrs["latency_reference_max_ms"],
                                 attrs["latency_reference_ms"])
    assert low <= attrs["ipu_latency_min_ms"] and high >= attrs["ipu_latency_max_ms"]  # every call, not only timed
    assert np.isfinite(mean) and low <= mean <= high


def test_ipu_reference_latency_is_the_mean_of_every_call_over_instances(fake_sdk):
    from ipu_fake import world as make_world

    run_config = config("--device ipu --warmup-iterations 1")
    other_rank = (1.0, 2.0, 10.0, 0.5, 20.0)  # another instance's (timed min, max, mean, min, max) in ms
    backend, model = prepared_backend(run_config, make_world(size=2, extremes=[other_rank]))
    first = step_input(run_config, backend, model, 1)
    step = backend.make_step(1, first)
    for _ in range(4):
        list(step(first)[1])
    attrs = backend.run_report(1).attrs
    readings = backend.latencies[1]
    assert len(readings) == 4  # the compile call, one warm-up step, two more: every call counts
    mine = 1000 * sum(reading[2] for reading in readings) / 4
    assert attrs["latency_reference_ms"] == pytest.approx((mine + 10.0) / 2)
    assert attrs["latency_reference_min_ms"] == min(0.5, 1000 * min(reading[0] for reading in readings))
    assert attrs["latency_reference_max_ms"] == max(20.0, 1000 * max(reading[1] for reading in readings))



# ---------------------------------------------------------------- 10: the stand-in as strict as the real library


def test_ipu_stand_in_options_turn_caching_on_from_poptorch_cache_dir(fake_sdk, monkeypatch, tmp_path):
    monkeypatch.setenv("POPTORCH_CACHE_DIR", str(tmp_path))
    assert fake_sdk.Options().values["executable_cache"] == str(tmp_path)


def test_ipu_stand_in_hardware_version_asserts_without_ipus(fake_sdk, monkeypatch):
    """poptorch's ipuHardwareVersion() asserts when there is no IPU: the backend must ask only with hardware
    (test_ipu.py's test_without_hardware_only_offline_compilation_is_possible builds one without)."""
    monkeypatch.setenv("FAKE_POPTORCH_HARDWARE", "0")
    with pytest.raises(AssertionError, match="No IPU hardware"):
        fake_sdk.ipuHardwareVersion()
    from mpirunner.backends.ipu import IpuBackend

    backend = IpuBackend(config("--device ipu --compile-only --offline-target-ipu-version 2"), world())
    assert backend.hardware_version is None


def test_ipu_stand_in_distributed_ids_are_values(fake_sdk, monkeypatch):
    options = fake_sdk.Options()
    assert (options.Distributed.processId, options.Distributed.numProcesses) == (0, 1)  # outside any launcher
    for key, value in poprun_env(instances=4, replicas=4, rank=2).items():
        monkeypatch.setenv(key, value)
    import popdist.poptorch

    options = popdist.poptorch.Options(ipus_per_replica=1)
    assert (options.Distributed.processId, options.Distributed.numProcesses) == (2, 4)


def test_ipu_stand_in_popdist_options_take_ipus_per_replica_without_poprun(fake_sdk):
    """Like the real class it does not check ipus_per_replica against poprun's: the runner must refuse it."""
    import popdist.poptorch

    options = popdist.poptorch.Options(ipus_per_replica=2)
    assert options.values["replication_factor"] == 1


@pytest.mark.parametrize("other_host_sees_it", [True, False])
def test_ipu_multi_host_cache_that_is_not_shared_is_named(fake_sdk, monkeypatch, tmp_path, caplog, other_host_sees_it):
    """Two hosts, one instance each, --model-cache-path on each host's own disk: the lock never counts both."""
    import logging
    from types import SimpleNamespace

    from mpirunner.backends.ipu import IpuBackend

    for key, value in poprun_env(instances=2, replicas=2).items():
        monkeypatch.setenv(key, value)
    two_hosts = SimpleNamespace(rank=0, size=2, local_rank=0, local_size=1, host="hostA", is_root=True,
                                bcast=lambda value: value,
                                allgather=lambda value: [value, ("hostB", other_host_sees_it)])
    logging.getLogger("mpirunner").addHandler(caplog.handler)
    try:
        IpuBackend(config(f"--device ipu --model-cache-path {tmp_path / 'cache'}"), two_hosts)
    finally:
        logging.getLogger("mpirunner").removeHandler(caplog.handler)
    lines = {record.getMessage() for record in caplog.records if "not one folder shared" in record.getMessage()}
    assert len(lines) == (0 if other_host_sees_it else 1)
    if lines:
        assert "hostB" in lines.pop() and "hostA" not in caplog.text.split("(")[1]
    assert list((tmp_path / "cache").iterdir()) == []  # the check leaves nothing behind


def test_ipu_fast_groupnorm_is_part_of_the_configuration_key():
    """It changes the compiled graph, so two runs that differ in it measure different things."""
    from mpirunner.report.variation import configuration_key, key_differences

    base = configuration_key({"config": "enable_fast_groupnorm: false\n"}, {})
    new = configuration_key({"config": "enable_fast_groupnorm: true\n"}, {})
    assert [name for name, _, _ in key_differences([base], [new])] == ["enable_fast_groupnorm"]


def test_ipu_a_call_after_the_timed_steps_that_nobody_reads_is_not_a_step(fake_sdk):
    """--check-outputs calls the step once more after timing and ignores its latency: not a reference step."""
    run_config = config("--device ipu --warmup-iterations 0")
    backend, model = prepared_backend(run_config, world())
    first = step_input(run_config, backend, model, 1)
    step = backend.make_step(1, first)
    for _ in range(3):
        list(step(first)[1])  # the compile call and two timed steps, read as bench.py reads them
    _, unread = step(first)  # the output check's call
    backend.run_report(1)
    assert len(backend.latencies[1]) == 3
    with pytest.raises(RuntimeError, match="not read before the model ran again"):
        list(unread)
