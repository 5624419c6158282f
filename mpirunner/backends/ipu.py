"""IPU backend through poptorch (imported only when used). Implemented by the IPU backend issue."""
from mpirunner.errors import UsageError


def hardware_available():
    """True when poptorch imports and reports IPU hardware."""
    try:
        import poptorch
    except ImportError:
        return False
    return bool(poptorch.ipuHardwareIsAvailable())


class IpuBackend:
    def __init__(self, config, world):
        raise UsageError("--device ipu needs poptorch (Poplar SDK), which is not installed here")
