"""IPU backend: each rank's replicas as one poptorch inference model, alone or under poprun (popdist).
poptorch and popdist (Poplar SDK only) are imported inside functions, so this module imports on any machine. Verified
only against the recording stand-in in tests/fake_poptorch, never on IPU hardware (docs/ipu.md)."""
import json
import logging
import os
import time

import torch

from mpirunner.backends.base import Backend, RunReport
from mpirunner.backends.ipu_sdk import (  # noqa: F401  (default_cache_path: tests and docs name it here)
    CACHE_DEFAULT, UNKNOWN_HARDWARE_VERSION, LatencyReading, buffering_depth_option, choose_cache,
    default_cache_path, engine_options_from_env, hardware_version_text, init_popdist, nan_extreme,
    popart_version, reference_latency, sdk_version_from_path, warn_about_stale_locks, warn_if_cache_not_shared)
from mpirunner.errors import UsageError

log = logging.getLogger("mpirunner")

PREFETCH_BUFFERING_DEPTH = 3  # with IO tiles, as the reference set it
IO_TILES_RANGE = (32, 192)  # poptorch accepts an even number in this range
REFERENCE_ENGINE_OPTIONS = {"target.deterministicWorkers": "portable"}  # the reference harness always sets it


def hardware_available():
    """True when poptorch imports and reports IPU hardware (what `--device auto` asks)."""
    try:
        import poptorch
    except ImportError:
        return False
    return bool(poptorch.ipuHardwareIsAvailable())


def _import_poptorch():
    try:
        import poptorch
    except ImportError as error:
        raise UsageError(f"--device ipu needs poptorch from the Poplar SDK, which does not import here ({error}); "
                         f"enable the SDK and install its poptorch wheel, or use --device cpu/cuda") from None
    return poptorch


def _popdist_if_under_poprun():
    """The popdist module when this process was started by poprun, else None."""
    try:
        import popdist
        import popdist.poptorch  # noqa: F401  (the Options factory used below)
    except ImportError as error:
        if any(key.startswith("POPDIST_") for key in os.environ):
            raise UsageError(f"started by poprun, but popdist does not import ({error}); "
                             f"enable the Poplar SDK in the environment poprun passes on") from None
        return None
    return popdist if popdist.isPopdistEnvSet() else None


class OverlappedIO(torch.nn.Module):
    """The network with its input and output marked for host IO overlapped with compute (IO tiles)."""

    def __init__(self, network):
        super().__init__()
        self.network = network

    def forward(self, images):
        import poptorch

        mode = poptorch.OverlapMode.OverlapAccumulationLoop
        images = poptorch.set_overlap_for_input(images, mode)
        return poptorch.set_overlap_for_output(self.network(images), mode)


class IpuBackend(Backend):
    name = "ipu"

    def __init__(self, config, world):
        super().__init__(config, world)
        self.poptorch = _import_poptorch()
        low, high = IO_TILES_RANGE
        if config.num_io_tiles and not (low <= config.num_io_tiles <= high and config.num_io_tiles % 2 == 0):
            raise UsageError(f"--num-io-tiles {config.num_io_tiles}: poptorch needs 0 or an even number "
                             f"from {low} to {high}")
        if config.half_dtype == "bfloat16":
            raise UsageError("--half-dtype bfloat16: the IPU's 16-bit type is float16; drop --half-dtype")
        self.popdist = _popdist_if_under_poprun()
        self.popdist_init = ""
        if self.popdist is not None:
            self.popdist_init = init_popdist(self.popdist)
            self.replicas_here = int(self.popdist.getNumLocalReplicas())
            self.total_replicas = int(self.popdist.getNumTotalReplicas())
            self.ipus_per_replica = int(self.popdist.getNumIpusPerReplica())
            if self.ipus_per_replica != 1:  # every rank reads the same poprun variable: all refuse alike
                raise UsageError(f"poprun --ipus-per-replica {self.ipus_per_replica}: mpirunner runs the whole "
                                 f"model on one IPU per replica (no pipeline splits); use --ipus-per-replica 1")
            if self.total_replicas != config.replicas * world.size and world.is_root:
                log.warning("poprun runs %d replicas in all (%d per instance); --replicas %d is overridden",
                            self.total_replicas, self.replicas_here, config.replicas)
        else:
            self.replicas_here = config.replicas
            self.total_replicas = config.replicas * world.size
            self.ipus_per_replica = 1
        self.hardware = bool(self.poptorch.ipuHardwareIsAvailable())
        self.hardware_version = int(self.poptorch.ipuHardwareVersion()) if self.hardware else None
        if self.hardware_version == UNKNOWN_HARDWARE_VERSION and world.is_root:
            log.warning("poptorch reports the IPU hardware version as unknown (-1); running on, recorded as unknown")
        self.offline_ipu_version = self._offline_target()
        self.cache_path, self.cache_source = choose_cache(config, world, self.popdist is not None, os.environ)
        warn_if_cache_not_shared(world, self.cache_path)
        warn_about_stale_locks(world, self.cache_path)
        if config.compile_only and self.popdist is None and world.is_root:
            log.warning("--compile-only outside poprun: under poprun poptorch builds a distributed replicated "
                        "graph, so this cache will not match a poprun run with several instances; warm that "
                        "cache with poprun's offline mode instead (poprun --offline-mode=on ...; docs/ipu.md says "
                        "what to export first)")
        # Poplar reads POPLAR_ENGINE_OPTIONS when the engine is built (compile), so set it now.
        self.env_engine_options = engine_options_from_env(os.environ, config.min_latency)
        if config.min_latency:
            os.environ["POPLAR_ENGINE_OPTIONS"] = json.dumps(self.env_engine_options, sort_keys=True)
        self.engine_options = {"opt.internalExchangeOptimisationTarget": config.exchange_memory_target,
                               **REFERENCE_ENGINE_OPTIONS}
        if config.data == "synthetic" and world.is_root:
            log.warning("--data synthetic on IPU: no host IO, so latency values are not meaningful "
                        "(marked in the file)")
        self.model = None
        self.inference_model = None
        self.compile_seconds = {}
        self.latencies = {}
        self._unread = []

    def _offline_target(self):
        """IPU version to compile for without attaching (--compile-only), or None to run on the hardware."""
        config = self.config
        if not config.compile_only:
            if not self.hardware and not os.environ.get("POPTORCH_IPU_MODEL"):
                raise UsageError("--device ipu: poptorch sees no IPU on this host; run on an IPU system, or build "
                                 "the executable cache with --compile-only --offline-target-ipu-version 2")
            return None
        if config.offline_target_ipu_version:
            return config.offline_target_ipu_version
        if not self.hardware:
            raise UsageError("--compile-only on a host without IPUs needs --offline-target-ipu-version "
                             "(2 for IPU-M2000)")
        if self.hardware_version == UNKNOWN_HARDWARE_VERSION:
            return None  # compile for the attached IPUs, whatever their version
        return self.hardware_version

    def local_replicas(self):
        return self.replicas_here

    def prepare(self, model, image_size):
        if self.config.activations_bits == 16:
            model = model.half()
        if self.config.num_io_tiles > 0:
            model = OverlappedIO(model)
        self.model = model.eval()

    def to_device(self, host_input):
        """Nothing to place: poptorch streams host tensors, and with synthetic data none at all."""
        return host_input

    def options(self):
        """The poptorch.Options of one inference model, as the reference set them."""
        poptorch = self.poptorch
        config = self.config
        if self.popdist is not None:
            opts = self.popdist.poptorch.Options(ipus_per_replica=self.ipus_per_replica)
        else:
            opts = poptorch.Options()
            opts.Distributed.disable()  # Options() read OMPI_COMM_WORLD_*: each rank is its own graph here
            opts.replicationFactor(config.replicas)
        opts.deviceIterations(config.device_iterations)
        opts.Precision.setPartialsType(torch.float16 if config.half_partial else torch.float32)
        if config.num_io_tiles > 0:
            opts.setExecutionStrategy(poptorch.ShardedExecution())
            opts._Popart.set(buffering_depth_option(popart_version()[0]), PREFETCH_BUFFERING_DEPTH)
            opts.TensorLocations.numIOTiles(config.num_io_tiles)
        if self.cache_path:
            opts.enableExecutableCaching(self.cache_path)
        if config.data == "synthetic":
            opts.enableSyntheticData(True)
        # As the reference (utils/ipu_settings.py, inference_settings): always set, off unless asked for.
        opts._Popart.set("groupNormStridedChannelGrouping", bool(config.enable_fast_groupnorm))
        opts._Popart.set("engineOptions", dict(self.engine_options))
        if self.offline_ipu_version is not None:
            opts.useOfflineIpuTarget(self.offline_ipu_version)
        return opts

    def _release_device(self):
        """Detach the previous size's model so the next can attach; destroy() it where the SDK can (host memory)."""
        previous, self.inference_model = self.inference_model, None
        if previous is None:
            return
        if previous.isAttachedToDevice():
            previous.detachFromDevice()
        if hasattr(previous, "destroy"):
            previous.destroy()

    def _forget_unread_latency(self):
        """A call after the timed steps whose latency nobody looked at (the output check's) is not recorded."""
        while self._unread:
            self._unread.pop().expire()

    def _compile(self, batch_size, inference_model, example_input):
        start = time.perf_counter()
        inference_model.compile(example_input)
        self.compile_seconds[batch_size] = time.perf_counter() - start
        log.info("compiled for batch size %d (%s, %s) in %.1f s", batch_size, tuple(example_input.shape),
                 example_input.dtype, self.compile_seconds[batch_size])

    def batch_latency_is_device_time(self):
        """getLatency() is 0 with synthetic data (no host IO): no device time to weigh the window with."""
        return self.config.data != "synthetic"

    def make_step(self, batch_size, example_input):
        """A new inference model per batch size, compiled (timed alone) by its first call or here (--compile-only)."""
        self._forget_unread_latency()
        self._release_device()
        inference_model = self.poptorch.inferenceModel(self.model, self.options())
        self.inference_model = inference_model
        latencies = self.latencies[batch_size] = []
        if self.config.compile_only:
            self._compile(batch_size, inference_model, example_input)

        untimed_calls = 1 + self.config.warmup_iterations  # bench.py: the compile call, then the warm-up
        pending = self._unread = []  # the previous call's reading while nobody has read it yet

        def step(step_input):
            if pending:  # a caller that ignores latencies (the server scenario): read it before the next run
                pending.pop().value()
            if batch_size not in self.compile_seconds:
                self._compile(batch_size, inference_model, step_input)
            outputs = inference_model(step_input)
            reading = LatencyReading(inference_model, latencies)
            if len(latencies) < untimed_calls:
                reading.value()  # an untimed call: read now, so no timed call ever carries it
            else:
                pending.append(reading)  # read when the caller looks at it, after its clock stopped
            return outputs, reading

        step.output_lag_steps = 0  # poptorch returns the outputs of the input it was handed
        step.reuses_outputs = True  # not promised otherwise by poptorch: whoever keeps outputs copies them
        return step

    def metadata(self):
        sdk_path = os.environ.get("POPLAR_SDK_ENABLED", "")
        effective = {**self.engine_options, **self.env_engine_options}
        return {
            "device_name": f"Graphcore IPU x{self.total_replicas * self.ipus_per_replica}",
            "poptorch_version": str(getattr(self.poptorch, "__version__", "")),
            "popart_version": popart_version()[1],
            "poplar_sdk_path": sdk_path,
            "poplar_sdk_version": sdk_version_from_path(sdk_path),
            "ipu_count": self.total_replicas * self.ipus_per_replica,
            "ipus_per_replica": self.ipus_per_replica,
            "local_replicas": self.replicas_here,
            "total_replicas": self.total_replicas,
            "popdist": self.popdist is not None,
            "popdist_init": self.popdist_init,
            "ipu_hardware_version": hardware_version_text(self.hardware_version),
            "ipu_executable_cache": self.cache_path or "",
            "ipu_executable_cache_source": self.cache_source,
            "ipu_offline_target": self.offline_ipu_version or 0,
            "ipu_engine_options": json.dumps(self.engine_options, sort_keys=True),
            "poplar_engine_options_env": json.dumps(self.env_engine_options, sort_keys=True),
            "ipu_engine_options_effective": json.dumps(effective, sort_keys=True),
        }

    def rank_info(self):
        return {"device": f"ipu x{self.replicas_here * self.ipus_per_replica}", "ipu_replicas": self.replicas_here}

    def run_report(self, batch_size):
        """poptorch's view of one run: compile time, getLatency() extremes (this rank's, every instance's), cache, and
        offline the reference harness's latency formula (one allgather, on every rank)."""
        self._forget_unread_latency()
        readings = self.latencies.get(batch_size, [])
        timed = readings[1 + self.config.warmup_iterations:]
        synthetic = self.config.data == "synthetic"
        low_ms = 1000.0 * min((t[0] for t in timed), default=float("nan"))
        high_ms = 1000.0 * max((t[1] for t in timed), default=float("nan"))
        everyone = self.world.allgather((low_ms, high_ms, *reference_latency(readings)))
        attrs = {
            "ipu_compile_seconds": self.compile_seconds.get(batch_size, float("nan")),
            "batch_latency_source": "poptorch getLatency(): average micro-batch latency of each step",
            "ipu_latency_min_ms": nan_extreme(min, [figures[0] for figures in everyone]),
            "ipu_latency_max_ms": nan_extreme(max, [figures[1] for figures in everyone]),
            "latency_meaningful": not synthetic,
            "latency_note": ("synthetic data: no host IO, so the latency values are not meaningful"
                             if synthetic else ""),
            "ipu_executable_cache": self.cache_path or "",
            "ipu_executable_cache_default": self.cache_source == CACHE_DEFAULT,
            "ipu_executable_cache_source": self.cache_source,
        }
        if self.config.scenario == "offline":  # the reference harness has no scenarios
            means = [figures[2] for figures in everyone if figures[2] == figures[2]]
            nan = float("nan")
            attrs.update({
                "ipu_count": self.total_replicas * self.ipus_per_replica,
                "latency_reference_ms": nan if synthetic or not means else sum(means) / len(means),
                "latency_reference_min_ms": nan if synthetic else nan_extreme(min, [f[3] for f in everyone]),
                "latency_reference_max_ms": nan if synthetic else nan_extreme(max, [f[4] for f in everyone]),
            })
        return RunReport(attrs=attrs, per_rank={"ipu_rank_latency_min_ms": low_ms, "ipu_rank_latency_max_ms": high_ms})

