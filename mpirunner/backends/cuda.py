"""CUDA backend (imported only when used). Implemented by the CUDA backend issue."""
from mpirunner.errors import UsageError


class CudaBackend:
    def __init__(self, config, world):
        raise UsageError("--device cuda: the CUDA backend is not implemented yet")
