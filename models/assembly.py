"""Assembles the benchmarked model of a run: registry model + variants + weights + input normalisation + precision.
Imports nothing of mpirunner but errors, so the models package sits below the runner (docs/inputs-and-precision.md)."""
import contextlib
import logging
from dataclasses import dataclass

import torch

from mpirunner.models.normalization import WithInputNormalization, normalization_location
from mpirunner.models.registry import build_model, default_resolution, torchvision_name
from mpirunner.models.variants import (DEFAULT_EXPAND_RATIO, efficientnet_expand_ratio, set_depthwise_group_dim,
                                       swap_norm_layers)
from mpirunner.models.weights import load_weights
from mpirunner.errors import UsageError

log = logging.getLogger("mpirunner")


def dtype_name(dtype):
    return str(dtype).replace("torch.", "")


@dataclass
class BenchmarkModel:
    module: torch.nn.Module
    image_size: int
    compute_dtype: torch.dtype
    input_dtype: torch.dtype
    weights_dtype: torch.dtype = torch.float32
    normalization_location: str = "host"
    precision_detail: str = ""

    def precision_attrs(self, backend, config):
        """Root attributes of the HDF5 file saying which numerics were actually used."""
        return {
            "dtype": dtype_name(self.compute_dtype),
            "weights_dtype": dtype_name(self.weights_dtype),
            "input_dtype": dtype_name(self.input_dtype),
            "precision_detail": self.precision_detail,
            "normalization_location_used": self.normalization_location,
            "half_dtype": dtype_name(backend.half_dtype()),
            "half_partial_used": bool(config.half_partial and backend.uses_option("half_partial")),
        }


def build_network(config):
    """The run's float32 eval-mode network (registry model, variants, weights), seeded so every rank builds the same."""
    torch.manual_seed(config.seed)
    name = torchvision_name(config.model)
    group_dim, expand_ratio = config.efficientnet_group_dim, config.efficientnet_expand_ratio
    if not name.startswith("efficientnet_b") and (group_dim != 1 or expand_ratio != DEFAULT_EXPAND_RATIO):
        raise UsageError(f"--efficientnet-group-dim / --efficientnet-expand-ratio apply to efficientnet-b0..b7 only "
                         f"(this run's model is {config.model})")
    with efficientnet_expand_ratio(expand_ratio) if expand_ratio != DEFAULT_EXPAND_RATIO else contextlib.nullcontext():
        network = build_model(config.model)
    set_depthwise_group_dim(network, group_dim)
    swap_norm_layers(network, config.norm_type, config.norm_num_groups, config.norm_eps)
    if config.weights:
        load_weights(network, config.weights, config.model)
    return network.eval()


def _with_normalization(network, location):
    return WithInputNormalization(network) if location == "device" else network


def build_reference_model(config):
    """float32 eager model of the same weights as the benchmarked one, on the host (for --check-outputs)."""
    return _with_normalization(build_network(config), normalization_location(config)).float().eval()


def build_benchmark_model(config, half_dtype):
    """Build the model every rank benchmarks (seeded, so identical on all ranks), on the host."""
    location = normalization_location(config)
    if location != config.normalization_location:
        log.warning("--eight-bit-io: inputs are uint8 and are normalised on the device; "
                    "--normalization-location host switched to device")
    if config.norm_type != "group" and not (config.is_default("norm_num_groups") and config.is_default("norm_eps")):
        log.warning("--norm-num-groups / --norm-eps are used only with --norm-type group (this run: %s)",
                    config.norm_type)
    network = build_network(config)
    image_size = config.image_size or default_resolution(config.model)
    half = config.weights_bits == 16
    compute_dtype = half_dtype if config.activations_bits == 16 else torch.float32
    weights_dtype = half_dtype if half else torch.float32
    if half and compute_dtype == torch.float32:  # 16.32: 16-bit weights, float32 compute
        network = network.to(weights_dtype).to(torch.float32)
        detail = f"16.32: weights rounded to {dtype_name(weights_dtype)}, held and computed in float32"
    elif half:
        detail = f"16.16: weights and activations in {dtype_name(compute_dtype)}"
    else:
        detail = "32.32: weights and activations in float32"
    module = _with_normalization(network, location).to(compute_dtype).eval()
    input_dtype = torch.uint8 if config.eight_bit_io else compute_dtype
    return BenchmarkModel(module, image_size, compute_dtype, input_dtype, weights_dtype, location, detail)
