"""The interface every backend implements: everything a job may ask of a device family is declared here."""
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

from mpirunner.options import option, unused_on


@dataclass
class RunReport:
    """What a backend adds to one run: `attrs` (rank 0's run group attributes), `per_rank` (a [world_size] dataset)."""

    attrs: dict = field(default_factory=dict)
    per_rank: dict = field(default_factory=dict)


class Backend(ABC):
    """One device family. Subclasses set `name` ('cpu', 'cuda', 'ipu': the option table's device names)."""

    name = "base"

    def __init__(self, config, world):
        self.config = config
        self.world = world

    def uses_option(self, dest):
        """Whether this device family uses the flag `dest` (its `devices` in the option table, options.py)."""
        return self.name in option(dest).devices

    def unused_options(self):
        """Options the user set to a non-default value that this backend does not use (for a warning)."""
        return unused_on(self.name, self.config)

    def compiles_ahead(self):
        """Whether --compile-only means something here: make_step builds (and caches) the executable (IPU)."""
        return self.uses_option("compile_only")

    def measures_peak(self):
        """Whether --measure-peak means something here (timed on roof_device())."""
        return self.uses_option("measure_peak")

    def roof_device(self):
        """The torch device whose roofs --measure-peak times."""
        return "cpu"

    def first_call_compiles(self):
        """Whether a step's first call compiles (IPU executables, torch.compile, CUDA graph capture)."""
        return self.compiles_ahead() or self.config.compile != "none" or bool(self.config.cuda_graphs)

    def pin(self, host_tensor):
        """The host tensor as the step copies it fastest (CUDA: page-locked); data.py pins inputs before timing."""
        return host_tensor

    def batch_latency_is_device_time(self):
        """Whether a step's batch latencies time the device's work (then device_busy is meaningful)."""
        return True

    def preferred_numa_node(self):
        """NUMA node this rank should be pinned to (a GPU's own node), or None to let placement decide."""
        return None

    def local_replicas(self):
        return 1

    def half_dtype(self):
        """The device's native 16-bit torch dtype, unless --half-dtype names one."""
        return getattr(torch, self.config.half_dtype or "float16")

    @abstractmethod
    def prepare(self, model, image_size):
        """Take ownership of the eval-mode model: move it to the device, set dtype and layout."""

    @abstractmethod
    def make_step(self, batch_size, example_input):
        """step(one host iteration: device_iterations x local replicas micro-batches along dim 0) -> (outputs,
        micro_batch_latencies_seconds), timed by bench.py; attributes output_lag_steps (its outputs are those of the
        input that many calls earlier) and reuses_outputs (the returned tensor is overwritten by the next call)."""

    @abstractmethod
    def to_device(self, host_input):
        """Hand a host tensor to the device (used by synthetic data to place its input once)."""

    def metadata(self):
        """Root attributes for the HDF5 file: device name and library versions (rank 0's are kept)."""
        return {}

    def rank_info(self):
        """Columns of this rank's row in /ranks (device, ...)."""
        return {"device": self.name}

    def run_report(self, batch_size):
        """This rank's report on one run (see RunReport); called on every rank after the timed steps."""
        return RunReport()
