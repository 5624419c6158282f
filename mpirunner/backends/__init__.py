"""Device backends behind one small interface (base.py); `auto` picks ipu > cuda > cpu."""
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
    if cuda_available():
        return "cuda"
    return "cpu"


def create_backend(config, world):
    """Build the backend object for this rank (imports the device's library only now)."""
    # --compile-only builds an IPU executable cache, typically on a host without IPUs: auto means ipu then
    name = "ipu" if config.compile_only and config.device == "auto" else select_backend_name(config.device)
    if name == "cpu":
        from mpirunner.backends.cpu import CpuBackend

        return CpuBackend(config, world)
    if name == "cuda":
        from mpirunner.backends.cuda import CudaBackend

        return CudaBackend(config, world)
    if name == "ipu":
        from mpirunner.backends.ipu import IpuBackend

        return IpuBackend(config, world)
    raise UsageError(f"unknown device '{name}' (valid: auto, {', '.join(BACKENDS)})")
