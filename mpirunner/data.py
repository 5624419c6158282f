"""Input sources: each gives the input of one step, made outside the timed region.

- generated: fresh random host data for every step; handing it to the device is part of the step.
- synthetic: one input placed on the device once; steps do no host IO.
- real: (the Inputs issue) decoded images held in memory and cycled through.
"""
import torch


def step_shape(batch_size, samples_per_micro_batch_group, image_size):
    """Input shape of one step: all micro-batches stacked along dim 0, as poptorch expects."""
    return (batch_size * samples_per_micro_batch_group, 3, image_size, image_size)


def random_images(shape, dtype, generator):
    """Random images: uint8 bytes for 8-bit IO, else standard-normal values in `dtype`."""
    if dtype == torch.uint8:
        return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(dtype)


class GeneratedInput:
    """Fresh host data for each step (seeded per rank, so runs are reproducible)."""

    mode = "generated"

    def __init__(self, shape, dtype, seed):
        self.shape = shape
        self.dtype = dtype
        self.generator = torch.Generator().manual_seed(seed)
        self.steps_made = 0

    def next_input(self):
        self.steps_made += 1
        return random_images(self.shape, self.dtype, self.generator)


class SyntheticInput:
    """One input, made once and placed on the device; every step reuses it."""

    mode = "synthetic"

    def __init__(self, shape, dtype, seed, to_device):
        generator = torch.Generator().manual_seed(seed)
        self.device_input = to_device(random_images(shape, dtype, generator))
        self.steps_made = 1

    def next_input(self):
        return self.device_input


def make_input_source(config, backend, shape, dtype, rank):
    seed = config.seed * 1000003 + rank
    if config.data == "synthetic":
        return SyntheticInput(shape, dtype, seed, backend.to_device)
    if config.data == "generated":
        return GeneratedInput(shape, dtype, seed)
    raise NotImplementedError(f"--data {config.data} is not implemented yet")
