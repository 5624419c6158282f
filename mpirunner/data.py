"""Input sources (docs/input-path.md), each a pool of steps made before the barrier so the window never times them:
generated (random host steps), synthetic (one input on the device), real (--data-path's images, ImageFolder-style)."""
import functools
import logging
import math
import sys
from pathlib import Path

import numpy as np
import torch

from mpirunner.models.normalization import normalization_location, normalize_on_host
from mpirunner.config import IMAGE_SUFFIXES
from mpirunner.errors import UsageError

log = logging.getLogger("mpirunner")


def step_shape(batch_size, micro_batches_per_step, image_size):
    """Input shape of one step: all micro-batches stacked along dim 0, as poptorch expects."""
    return (batch_size * micro_batches_per_step, 3, image_size, image_size)


def image_generator(seed):
    """The random generator of generated/synthetic images (numpy's PCG64: seeded, and fast)."""
    return np.random.default_rng(seed)


def random_images(shape, dtype, generator, channels_last=False):
    """Random NCHW images (laid out NHWC with channels_last): uint8 bytes for 8-bit IO, else zero-mean unit-variance
    values in `dtype`. Raw bytes: 0.7 ms for ResNet-50's 8 x 3 x 224 x 224, where torch.randint's 4 ms would show."""
    count, channels, height, width = shape
    raw = torch.frombuffer(bytearray(generator.bytes(count * channels * height * width)), dtype=torch.uint8)
    images = raw.view(count, height, width, channels).permute(0, 3, 1, 2) if channels_last else raw.view(shape)
    if dtype == torch.uint8:
        return images
    return ((images.to(torch.float32) - 127.5) / 73.9).to(dtype)  # uniform bytes: std 73.9


def host_reference_dtype(dtype):
    """The exact host form of an input before it is cast for the model: uint8 stays, floats are float32."""
    return torch.uint8 if dtype == torch.uint8 else torch.float32


class InputSource:
    """What every source offers: next_input() from its pool of ready steps (pool, pool_bytes), check_input() (one
    step in its exact host form: uint8, or float32 before the cast) and, with labelled real data, accuracy."""

    steps_made = 0

    def next_input(self):
        staged = self.pool[self.steps_made % len(self.pool)]
        self.steps_made += 1
        return staged

    def observe(self, step):
        """Wrap the step to see its outputs (labelled real data); other sources return it unchanged."""
        return step

    def follow(self, step):
        """Learn how the backend's step returns outputs (output_lag_steps, reuses_outputs; backends/base.py)."""

    def accuracy_counts(self):
        """{'samples', 'top1', 'top5', 'model_classes', 'images', 'classes'} of this rank (images: those it
        holds; classes: the class folder names), or None when the data has no labels."""
        return None


POOL_MAX_STEPS = 4  # generated data: distinct steps kept; enough that no two neighbouring steps share an input


def steps_within(step_bytes, limit_bytes, most):
    return min(max(1, int(limit_bytes // max(step_bytes, 1))), most)


def tensor_bytes(tensor):
    return tensor.numel() * tensor.element_size()


class SeededInput(InputSource):
    """Generated and synthetic data: random images from a seed, from which the check input is drawn again."""

    def check_input(self):
        return random_images(self.shape, host_reference_dtype(self.dtype), image_generator(self.seed))


class GeneratedInput(SeededInput):
    """A pool of distinct random steps made before timing (seeded per rank) in the model's dtype and layout, pinned on
    CUDA: nothing is drawn or cast between timed steps; the host->device copy stays inside the step (it is measured)."""

    def __init__(self, shape, dtype, seed, pin=None, channels_last=False, limit_bytes=1 << 30):
        self.shape, self.dtype, self.seed = shape, dtype, seed
        generator = image_generator(seed)
        first = self._make(generator, pin, channels_last)
        count = steps_within(tensor_bytes(first), limit_bytes, POOL_MAX_STEPS)
        self.pool = [first] + [self._make(generator, pin, channels_last) for _ in range(count - 1)]
        self.pool_bytes = sum(tensor_bytes(tensor) for tensor in self.pool)

    def _make(self, generator, pin, channels_last):
        images = random_images(self.shape, self.dtype, generator, channels_last)
        return pin(images) if pin else images


class SyntheticInput(SeededInput):
    """One input, made once and placed on the device; every step reuses it."""

    def __init__(self, shape, dtype, seed, to_device):
        self.shape, self.dtype, self.seed = shape, dtype, seed
        self.pool = [to_device(random_images(shape, dtype, image_generator(seed)))]
        self.pool_bytes = tensor_bytes(self.pool[0])  # on the device


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
        log.warning("--data-path %s has class folders; the %d images directly inside it are not used", folder,
                    len(loose))
    labelled = [(path, label) for label, directory in enumerate(class_dirs) for path in images_in(directory, True)]
    return [path for path, _ in labelled], [label for _, label in labelled], [d.name for d in class_dirs]


def _decode_all(paths, image_size):
    """Decode `paths` once: ([uint8 tensors], indices of the decoded paths, [(path, why)] of unreadable ones)."""
    from PIL import Image
    from torchvision import transforms

    transform = transforms.Compose([transforms.Resize(int(image_size * 256 / 224)), transforms.CenterCrop(image_size),
                                    transforms.PILToTensor()])
    images, kept, unreadable = [], [], []
    for index, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                images.append(transform(image.convert("RGB")))
                kept.append(index)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            unreadable.append((str(path), str(error) or type(error).__name__))
    return images, kept, unreadable


def _every_rank(value, world_size):
    """Each rank's `value` (allgather) when this process is one of `world_size` MPI ranks, else [value]."""
    MPI = sys.modules.get("mpi4py.MPI")
    if world_size > 1 and MPI and MPI.Is_initialized() and MPI.COMM_WORLD.Get_size() == world_size:
        return MPI.COMM_WORLD.allgather(value)
    return [value]


@functools.lru_cache(maxsize=2)
def load_image_set(folder, image_size, rank=0, world_size=1):
    """Decode this rank's share of the folder once per job -> (uint8 [N, 3, size, size], int64 labels or None,
    classes). Unreadable files are skipped (rank 0 warns once), unless none is readable: a UsageError on every rank."""
    all_paths, all_labels, classes = list_images(folder)
    chosen = range(len(all_paths))  # indices into all_paths
    if len(all_paths) >= world_size:  # disjoint shares; with fewer images than ranks every rank takes them all
        chosen = chosen[rank::world_size]
    images, kept, unreadable = _decode_all([all_paths[index] for index in chosen], image_size)
    reports = _every_rank((len(images), unreadable), world_size)
    bad = dict(sorted(why for _, found in reports for why in found))  # path -> reason, over the folder
    if bad:
        first = next(iter(bad.items()))
        where = (f"{len(bad)} of {len(all_paths) if len(reports) == world_size else len(chosen)} image file(s) "
                 f"unreadable, first: {first[0]} ({first[1]})")
        if not any(count for count, _ in reports):
            raise UsageError(f"--data-path {folder}: no image can be read ({where})")
        if rank == 0:
            log.warning("--data-path %s: skipping %s", folder, where)
    if not images:  # this rank's share is unreadable, other ranks' is not: take every readable file
        chosen = [index for index, path in enumerate(all_paths) if str(path) not in bad]
        images, kept, _ = _decode_all([all_paths[index] for index in chosen], image_size)
    labels = None if all_labels is None else torch.tensor([all_labels[chosen[i]] for i in kept], dtype=torch.int64)
    return torch.stack(images), labels, tuple(classes)


def prepare_images(images, dtype, location):
    """uint8 images -> the model's input: as they are (8-bit IO), float 0..255, normalised, or scaled to 0..1."""
    if dtype == torch.uint8:
        return images
    if location == "host":
        return normalize_on_host(images).to(dtype)
    if location == "none":
        return (images.to(torch.float32) / 255.0).to(dtype)
    return images.to(dtype)


class TopKCounter:
    """Running counts of samples whose label is the top-1 / among the top-5 outputs."""

    def __init__(self):
        self.samples, self.top1, self.top5 = 0, 0, 0
        self.model_classes = 0  # width of the model's output: chance level is 1 / this
        self.warned = False

    def add(self, outputs, labels):
        logits = torch.as_tensor(outputs).detach().reshape(-1, outputs.shape[-1]).float().cpu()
        if logits.shape[0] != labels.shape[0]:
            if not self.warned:
                log.warning("accuracy: a step returned %d outputs for %d labels; such steps are not counted",
                            logits.shape[0], labels.shape[0])
                self.warned = True
            return
        self.model_classes = int(logits.shape[1])
        hits = logits.topk(min(5, logits.shape[1]), dim=1).indices == labels.view(-1, 1)
        self.samples += int(labels.shape[0])
        self.top1 += int(hits[:, 0].sum())
        self.top5 += int(hits.any(dim=1).sum())

    def counts(self):
        return {"samples": self.samples, "top1": self.top1, "top5": self.top5, "model_classes": self.model_classes}


ACCURACY_PENDING_BYTES = 256 << 20  # outputs kept for counting after the timed steps, per rank


class RealInput(InputSource):
    """Decoded images staged before timing as a ring of ready steps (docs/input-path.md). With labels it counts
    accuracy: a step's outputs are kept (copied when the backend reuses its buffer) and counted after the timed steps,
    or between steps past ACCURACY_PENDING_BYTES; `output_lag_steps` pairs them with the right labels."""

    def __init__(self, images, labels, shape, dtype, location, pin=None, channels_last=False, limit_bytes=1 << 30,
                 classes=()):
        self.samples_per_step = shape[0]
        self.images, self.dtype, self.location = images, dtype, location
        step_bytes = tensor_bytes(prepare_images(images[:1], dtype, location)) * self.samples_per_step
        cycle = images.shape[0] // math.gcd(images.shape[0], self.samples_per_step)  # steps through every image once
        steps = steps_within(step_bytes, limit_bytes, cycle)  # or as many of them as fit
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.ring, self.ring_labels = [], []
        for step in range(steps):
            indices = self._indices(step * self.samples_per_step)
            staged = prepare_images(images[indices], dtype, location).contiguous(memory_format=memory_format)
            self.ring.append(pin(staged) if pin else staged)
            self.ring_labels.append(labels[indices] if labels is not None else None)
        self.pool = self.ring
        self.pool_bytes = sum(tensor_bytes(tensor) for tensor in self.ring)
        self.counter = TopKCounter() if labels is not None else None
        self.output_lag_steps = 0
        self.outputs_reused = True  # keep a copy unless the job knows the step returns fresh tensors
        self._pending = []  # (outputs, labels) of steps not counted yet
        self._pending_bytes = 0
        self._ring_entry = {tensor.data_ptr(): index for index, tensor in enumerate(self.ring)}
        self._previous_entry = None
        self.classes = classes  # the class folder names, sorted: folder i is class index i

    def _indices(self, start):
        return (start + torch.arange(self.samples_per_step)) % self.images.shape[0]

    def follow(self, step):
        self.output_lag_steps = step.output_lag_steps
        self.outputs_reused = step.reuses_outputs

    def check_input(self):
        return prepare_images(self.images[self._indices(0)], host_reference_dtype(self.dtype), self.location)

    def _labels_returned(self, step_input):
        """Labels of the input whose outputs this call returns (the previous call's input under IO overlap)."""
        entry = self._ring_entry.get(step_input.data_ptr())
        returned = self._previous_entry if self.output_lag_steps and self._previous_entry is not None else entry
        self._previous_entry = entry
        return None if returned is None else self.ring_labels[returned]

    def observe(self, step):
        if self.counter is None:
            return step

        def observed_step(step_input):
            outputs, latencies = step(step_input)
            labels = self._labels_returned(step_input)
            if labels is None:  # not a ring input (e.g. the output check's): not counted
                return outputs, latencies
            kept = outputs.clone() if self.outputs_reused else outputs
            self._pending.append((kept, labels))
            self._pending_bytes += tensor_bytes(kept)
            if self._pending_bytes > ACCURACY_PENDING_BYTES:
                self._count_pending()
            return outputs, latencies

        return observed_step

    def _count_pending(self):
        for outputs, labels in self._pending:
            self.counter.add(outputs, labels)
        self._pending.clear()
        self._pending_bytes = 0

    def accuracy_counts(self):
        if self.counter is None:
            return None
        self._count_pending()
        return {**self.counter.counts(), "images": int(self.images.shape[0]), "classes": self.classes}


def make_input_source(config, backend, shape, dtype, rank, world_size=1, image_size=None):
    """The source of --data for one batch size. `dtype` is the model's input dtype (uint8 with 8-bit IO)."""
    seed = config.seed * 1000003 + rank
    limit_bytes = config.input_pool_mib << 20
    pin = backend.pin if backend is not None else None
    if config.data == "synthetic":
        return SyntheticInput(shape, dtype, seed, backend.to_device)
    if config.data == "generated":
        return GeneratedInput(shape, dtype, seed, pin=pin, channels_last=config.channels_last, limit_bytes=limit_bytes)
    if config.data == "real":
        images, labels, classes = load_image_set(str(config.data_path), image_size or shape[-1], rank, world_size)
        return RealInput(images, labels, shape, dtype, normalization_location(config), pin=pin,
                         channels_last=config.channels_last, limit_bytes=limit_bytes, classes=classes)
    raise ValueError(f"unknown data mode {config.data}")
