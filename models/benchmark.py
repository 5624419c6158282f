"""The benchmarked model of a run: registry model + input normalisation + dtype, per the RunConfig."""
from dataclasses import dataclass

import torch

from models.normalization import WithInputNormalization
from models.registry import build_model, default_resolution


@dataclass
class BenchmarkModel:
    module: torch.nn.Module
    image_size: int
    compute_dtype: torch.dtype
    input_dtype: torch.dtype


def build_benchmark_model(config, half_dtype):
    """Build the model every rank benchmarks (seeded, so identical on all ranks), on the host."""
    torch.manual_seed(config.seed)
    module = build_model(config.model)
    image_size = config.image_size or default_resolution(config.model)
    if config.eight_bit_io or config.normalization_location == "device":
        module = WithInputNormalization(module)
    compute_dtype = half_dtype if config.activations_bits == 16 else torch.float32
    module = module.to(compute_dtype).eval()
    input_dtype = torch.uint8 if config.eight_bit_io else compute_dtype
    return BenchmarkModel(module, image_size, compute_dtype, input_dtype)
