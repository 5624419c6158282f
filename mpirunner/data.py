"""Input sources: each gives the input of one step, made outside the timed region.

- generated: fresh random host data for every step; handing it to the device is part of the step.
- synthetic: one input placed on the device once; steps do no host IO.
- real: images of --data-path (an ImageFolder tree of class folders, or a flat folder), decoded once per
  job, resized to size*256/224 and center-cropped to the model's size (as the reference), held in memory
  as uint8 and cycled through the steps. Ranks take disjoint shares (every world_size-th file). Class
  folders give labels (sorted folder names -> 0, 1, ..., as torchvision's ImageFolder), and then the
  source counts top-1/top-5 accuracy outside the timed region (see accuracy.py).

How an image reaches the model depends on where the run normalises (models.normalization):
device -> uint8 with 8-bit IO, else float 0..255; host -> (x/255 - mean)/std; none -> x/255.
"""
import functools
import logging
from pathlib import Path

import torch

from models.normalization import normalization_location, normalize_on_host
from mpirunner.config import IMAGE_SUFFIXES

log = logging.getLogger("mpirunner")


def step_shape(batch_size, samples_per_micro_batch_group, image_size):
    """Input shape of one step: all micro-batches stacked along dim 0, as poptorch expects."""
    return (batch_size * samples_per_micro_batch_group, 3, image_size, image_size)


def image_generator(seed):
    """The random generator of generated/synthetic images (numpy's PCG64: seeded, and fast)."""
    import numpy as np

    return np.random.default_rng(seed)


def random_images(shape, dtype, generator, channels_last=False):
    """Random NCHW images: uint8 bytes for 8-bit IO, else zero-mean unit-variance values in `dtype`.

    Drawn as raw bytes from numpy's PCG64 (about 0.7 ms for ResNet-50's 8 x 3 x 224 x 224; torch.randint
    takes 4 ms, which the throughput window, spanning the gaps between steps, would count). With
    channels_last the bytes are laid out NHWC, so the backend's layout change is free.
    """
    count, channels, height, width = shape
    raw = torch.frombuffer(bytearray(generator.bytes(count * channels * height * width)), dtype=torch.uint8)
    if channels_last:
        images = raw.view(count, height, width, channels).permute(0, 3, 1, 2)
    else:
        images = raw.view(shape)
    if dtype == torch.uint8:
        return images
    return ((images.to(torch.float32) - 127.5) / 73.9).to(dtype)  # uniform bytes: std 73.9


def host_reference_dtype(dtype):
    """The exact host form of an input before it is cast for the model: uint8 stays, floats are float32."""
    return torch.uint8 if dtype == torch.uint8 else torch.float32


class InputSource:
    """What every source offers: the next step's input, a check input, and (real data) accuracy."""

    mode = "base"

    def next_input(self):
        raise NotImplementedError

    def check_input(self):
        """One step's input in its exact host form (uint8, or float32 before the cast to the model's dtype)."""
        raise NotImplementedError

    def observe(self, step):
        """Wrap the step to see its outputs (labelled real data); other sources return it unchanged."""
        return step

    def accuracy_counts(self):
        """{'samples', 'top1', 'top5'} of this rank, or None when the data has no labels."""
        return None


class GeneratedInput(InputSource):
    """Fresh host data for each step (seeded per rank, so runs are reproducible)."""

    mode = "generated"

    def __init__(self, shape, dtype, seed, pin=None, channels_last=False):
        self.shape = shape
        self.dtype = dtype
        self.seed = seed
        self.channels_last = channels_last
        self.generator = image_generator(seed)
        self.steps_made = 0
        self.pin = pin  # backend.pin (CUDA): made in pinned memory, outside the timed step, for non-blocking copies

    def next_input(self):
        self.steps_made += 1
        images = random_images(self.shape, self.dtype, self.generator, self.channels_last)
        return self.pin(images) if self.pin else images

    def check_input(self):
        return random_images(self.shape, host_reference_dtype(self.dtype), image_generator(self.seed))


class SyntheticInput(InputSource):
    """One input, made once and placed on the device; every step reuses it."""

    mode = "synthetic"

    def __init__(self, shape, dtype, seed, to_device):
        self.shape, self.dtype, self.seed = shape, dtype, seed
        self.device_input = to_device(random_images(shape, dtype, image_generator(seed)))
        self.steps_made = 1

    def next_input(self):
        return self.device_input

    def check_input(self):
        return random_images(self.shape, host_reference_dtype(self.dtype), image_generator(self.seed))


# ---------------------------------------------------------------- real images

def list_images(folder):
    """(paths, labels or None, class names) of an ImageFolder tree (class folders) or a flat folder."""
    folder = Path(folder)

    def images_in(directory, recursive):
        found = directory.rglob("*") if recursive else directory.iterdir()
        return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)

    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and images_in(d, True))
    if not class_dirs:
        return images_in(folder, False), None, []
    loose = images_in(folder, False)
    if loose:
        log.warning("--data-path %s has class folders; the %d images directly inside it are not used", folder, len(loose))
    paths, labels = [], []
    for label, directory in enumerate(class_dirs):
        for path in images_in(directory, True):
            paths.append(path)
            labels.append(label)
    return paths, labels, [d.name for d in class_dirs]


@functools.lru_cache(maxsize=2)
def load_image_set(folder, image_size, rank=0, world_size=1):
    """Decode this rank's share of the folder once per job: (uint8 [N, 3, size, size], int64 labels or None, classes)."""
    from PIL import Image
    from torchvision import transforms

    paths, labels, classes = list_images(folder)
    if len(paths) >= world_size:  # disjoint shares; with fewer images than ranks every rank takes them all
        paths, labels = paths[rank::world_size], (labels[rank::world_size] if labels is not None else None)
    transform = transforms.Compose([transforms.Resize(int(image_size * 256 / 224)), transforms.CenterCrop(image_size),
                                    transforms.PILToTensor()])
    images, kept_labels, unreadable = [], [], []
    for index, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                images.append(transform(image.convert("RGB")))
        except OSError as error:
            unreadable.append(f"{path}: {error}")
            continue
        if labels is not None:
            kept_labels.append(labels[index])
    if unreadable:
        log.warning("--data-path: skipped %d unreadable image(s), first: %s", len(unreadable), unreadable[0])
    if not images:
        raise RuntimeError(f"--data-path {folder}: no readable image in this rank's share")
    label_tensor = torch.tensor(kept_labels, dtype=torch.int64) if labels is not None else None
    return torch.stack(images), label_tensor, tuple(classes)


def prepare_images(images, dtype, location):
    """uint8 images -> the model's input: as they are (8-bit IO), float 0..255, normalised, or scaled to 0..1."""
    if dtype == torch.uint8:
        return images
    if location == "host":
        return normalize_on_host(images).to(dtype)
    if location == "none":
        return (images.to(torch.float32) / 255.0).to(dtype)
    return images.to(dtype)


class RealInput(InputSource):
    """Decoded images held in memory and cycled through the steps; with labels it counts accuracy."""

    mode = "real"

    def __init__(self, images, labels, shape, dtype, location):
        from mpirunner.accuracy import TopKCounter

        self.images, self.labels = images, labels
        self.samples_per_step = shape[0]
        self.dtype, self.location = dtype, location
        self.position = 0
        self.steps_made = 0
        self.counter = TopKCounter() if labels is not None else None
        self._labels_in_flight = None
        self._pending = []  # (outputs, labels) of steps not counted yet

    def _indices(self, start):
        return (start + torch.arange(self.samples_per_step)) % self.images.shape[0]

    def next_input(self):
        self._count_pending()
        indices = self._indices(self.position)
        self.position = (self.position + self.samples_per_step) % self.images.shape[0]
        self.steps_made += 1
        if self.labels is not None:
            self._labels_in_flight = self.labels[indices]
        return prepare_images(self.images[indices], self.dtype, self.location)

    def check_input(self):
        return prepare_images(self.images[self._indices(0)], host_reference_dtype(self.dtype), self.location)

    def observe(self, step):
        if self.counter is None:
            return step

        def observed_step(step_input):
            outputs, latencies = step(step_input)
            self._pending.append((outputs, self._labels_in_flight))  # a reference only: counted later, untimed
            return outputs, latencies

        return observed_step

    def _count_pending(self):
        for outputs, labels in self._pending:
            self.counter.add(outputs, labels)
        self._pending.clear()

    def accuracy_counts(self):
        if self.counter is None:
            return None
        self._count_pending()
        return self.counter.counts()


def make_input_source(config, backend, shape, dtype, rank, world_size=1, image_size=None):
    """The source of --data for one batch size. `dtype` is the model's input dtype (uint8 with 8-bit IO)."""
    seed = config.seed * 1000003 + rank
    if config.data == "synthetic":
        return SyntheticInput(shape, dtype, seed, backend.to_device)
    if config.data == "generated":
        return GeneratedInput(shape, dtype, seed, pin=getattr(backend, "pin", None), channels_last=config.channels_last)
    if config.data == "real":
        images, labels, _classes = load_image_set(str(config.data_path), image_size or shape[-1], rank, world_size)
        return RealInput(images, labels, shape, dtype, normalization_location(config))
    raise ValueError(f"unknown data mode {config.data}")
