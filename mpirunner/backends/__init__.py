"""Device backends behind one small interface (base.py); `auto` picks ipu > cuda > cpu."""
import importlib
import os

from mpirunner.errors import UsageError

BACKENDS = ("ipu", "cuda", "cpu")


def _ipu_available():
    from mpirunner.backends import ipu

    return ipu.hardware_available()


def _cuda_available():
    import torch

    return torch.cuda.is_available()


def select_backend_name(device, ipu_available=_ipu_available, cuda_available=_cuda_available):
    """The device family this job uses: the one asked for, or for `auto` the first available of ipu, cuda, cpu."""
    if device != "auto":
        return device
    if ipu_available():
        return "ipu"
    return "cuda" if cuda_available() else "cpu"


def family_for(config, ipu_available=_ipu_available, cuda_available=_cuda_available):
    """This job's device family: `auto` keeps the one a config declares (never silently another), else picks one."""
    if config.device == "auto" and config.config_device:
        return config.config_device
    # --compile-only builds an IPU executable cache, typically on a host without IPUs: auto means ipu then
    if config.compile_only and config.device == "auto":
        return "ipu"
    return select_backend_name(config.device, ipu_available, cuda_available)


def samples_per_step(config):
    """Samples one step of the config's largest batch size takes (batch x device iterations x replicas)."""
    return max(config.batch_sizes) * config.device_iterations * config.replicas


def family_warning(name, config):
    """The warning for a config written for another device family (--device cpu on an -mk2 config), or None."""
    if not config.config_device or config.config_device == name:
        return None
    return (f"config {config.name} is written for {config.config_device}; running it on {name}: one step is "
            f"{samples_per_step(config):,} samples (batch {max(config.batch_sizes)} x {config.device_iterations} "
            f"device iterations x {config.replicas} replica(s)); its first estimate follows")


def check_family_present(name, config, ipu_available=_ipu_available):
    """UsageError when the job asks for IPUs and the host has none (before any rank builds anything)."""
    if name != "ipu" or config.compile_only or os.environ.get("POPTORCH_IPU_MODEL") or ipu_available():
        return
    asked = (f"config {config.name} is written for IPUs (device: ipu)" if config.config_device == "ipu"
             and config.device in ("ipu", "auto") else "--device ipu")
    raise UsageError(f"{asked}, and this host has none (poptorch does not import or sees no IPU); to run the same "
                     f"benchmark on this host's CPU add --device cpu (one step is {samples_per_step(config):,} "
                     f"samples, slow on a CPU: --batch-size and --device-iterations make it smaller)")


def create_backend(config, world):
    """Build the backend object for this rank (imports the device's library only now)."""
    name = family_for(config)
    check_family_present(name, config)
    if name not in BACKENDS:
        raise UsageError(f"unknown device '{name}' (valid: auto, {', '.join(BACKENDS)})")
    module = importlib.import_module(f"mpirunner.backends.{name}")
    return getattr(module, f"{name.capitalize()}Backend")(config, world)
