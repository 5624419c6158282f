"""The interface every backend implements, and the PyTorch plumbing CPU and CUDA share.

A backend turns the model into a `step` callable for one batch size. A step takes the input of one
host iteration (device_iterations x local replicas micro-batches, stacked along dim 0, as poptorch
expects) and returns the outputs on the host plus the latency in seconds of each micro-batch.
bench.py times the step itself; the backend only reports what happens inside it.
"""
from abc import ABC, abstractmethod

# Options only some backends use; each backend lists the ones it ignores so the log can say so.
DEVICE_SPECIFIC_OPTIONS = {
    "replicas": 1, "num_io_tiles": 0, "half_partial": False, "exchange_memory_target": "cycles",
    "min_latency": False, "compile_only": False, "offline_target_ipu_version": None,
    "cuda_graphs": False, "allow_gpu_sharing": False, "compile": "none", "channels_last": False,
    "model_cache_path": None, "measure_peak": False,
}


class Backend(ABC):
    """One device family. Subclasses set `name` and `used_options`."""

    name = "base"
    used_options = frozenset()

    def __init__(self, config, world):
        self.config = config
        self.world = world

    def unused_options(self):
        """Options the user set to a non-default value that this backend does not use."""
        return [key for key, default in DEVICE_SPECIFIC_OPTIONS.items()
                if key not in self.used_options and getattr(self.config, key) != default]

    @abstractmethod
    def half_dtype(self):
        """The device's native 16-bit torch dtype."""

    @abstractmethod
    def prepare(self, model, image_size):
        """Take ownership of the eval-mode model: move it to the device, set dtype and layout."""

    @abstractmethod
    def make_step(self, batch_size, example_input):
        """Return step(step_input) -> (outputs, micro_batch_latencies_seconds), compiled for this size."""

    @abstractmethod
    def to_device(self, host_input):
        """Hand a host tensor to the device (used by synthetic data to place its input once)."""

    def preferred_numa_node(self):
        """NUMA node this rank should be pinned to (a GPU's own node), or None to let placement decide."""
        return None

    def local_replicas(self):
        return 1

    def metadata(self):
        """Root attributes for the HDF5 file: device name and library versions."""
        return {}

    def rank_info(self):
        """Columns of this rank's row in /ranks (device, ...)."""
        return {"device": self.name}

    def run_info(self, batch_size):
        """Attributes for one run group that only the backend knows (e.g. engine options). Called on rank 0 only."""
        return {}

    def batch_latency_is_device_time(self):
        """Whether a step's batch latencies time the device's work (then device_busy is meaningful)."""
        return True

    def rank_run_values(self, batch_size):
        """Numbers of this rank for one run, called on every rank: each key becomes a [world_size] dataset."""
        return {}
