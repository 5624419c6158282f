"""Which GPU each rank uses, and facts about a GPU: pure planning over what the ranks see, sysfs and driver readers."""
import ctypes
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

import torch

from mpirunner.errors import UsageError


@dataclass(frozen=True)
class GpuView:
    """What one rank sees: its place on its host and the identities (UUID or PCI id) of its visible GPUs."""

    rank: int
    host: str
    local_rank: int
    local_size: int
    visible: Tuple[str, ...]
    visibility: str  # 'CUDA_VISIBLE_DEVICES=...' or '... unset', for messages
    no_gpu_reason: str = ""


def describe_visibility(environ=None):
    value = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
    return "CUDA_VISIBLE_DEVICES unset" if value is None else f"CUDA_VISIBLE_DEVICES='{value}'"


def gpu_index_for_rank(local_rank, device_count):
    if device_count < 1:
        raise UsageError("--device cuda: no CUDA GPU is visible")
    return local_rank % device_count


def plan_gpus(views, allow_sharing):
    """Each rank's GPU index (in rank order), identical on every rank given the same views. UsageError when a rank
    sees no GPU, or, without --allow-gpu-sharing, when two ranks of one host would use the same GPU."""
    for view in views:
        if not view.visible:
            reason = f" ({view.no_gpu_reason})" if view.no_gpu_reason else ""
            raise UsageError(f"--device cuda: no CUDA GPU is visible to rank {view.rank} on host {view.host}"
                             f"{reason}; use --device cpu, or auto to pick what is there")
    indices = [gpu_index_for_rank(view.local_rank, len(view.visible)) for view in views]
    owners = {}
    for view, index in zip(views, indices):
        first = owners.setdefault((view.host, view.visible[index]), view)
        if first is not view and not allow_sharing:
            raise UsageError(
                f"--device cuda: {view.local_size} ranks on host {view.host} but {len(view.visible)} visible GPU(s) "
                f"({view.visibility}): local ranks {first.local_rank} and {view.local_rank} would share GPU {index}; "
                f"start at most {len(view.visible)} ranks per host or pass --allow-gpu-sharing")
    return indices


def shared_gpus(views, indices):
    """{(host, gpu id): [ranks]} for GPUs used by more than one rank (only with --allow-gpu-sharing)."""
    users = {}
    for view, index in zip(views, indices):
        users.setdefault((view.host, view.visible[index]), []).append(view.rank)
    return {key: ranks for key, ranks in users.items() if len(ranks) > 1}


def pci_id(properties):
    """'0000:3b:00.0' (the sysfs name) from torch's device properties, or '' when torch does not report it."""
    try:
        return f"{properties.pci_domain_id:04x}:{properties.pci_bus_id:02x}:{properties.pci_device_id:02x}.0"
    except AttributeError:
        return ""


def numa_node_of_pci_device(pci, sysfs_root="/sys"):
    """NUMA node a PCI device hangs on (/sys/bus/pci/devices/<pci>/numa_node), None when unknown or -1."""
    if not pci:
        return None
    try:
        node = int((Path(sysfs_root) / "bus" / "pci" / "devices" / pci / "numa_node").read_text().strip())
    except (OSError, ValueError):
        return None
    return node if node >= 0 else None


_DRIVER_LINE = re.compile(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+(?:\.\d+)+)")


def parse_nvidia_driver_version(text):
    """The driver version from /proc/driver/nvidia/version's text ('' when absent)."""
    match = _DRIVER_LINE.search(text or "")
    return match.group(1) if match else ""


def nvidia_driver_version(path="/proc/driver/nvidia/version"):
    try:
        return parse_nvidia_driver_version(Path(path).read_text())
    except OSError:
        return ""


def format_cuda_version(number):
    """cuDriverGetVersion's integer (12040) -> '12.4'."""
    return f"{number // 1000}.{(number % 1000) // 10}"


def cuda_driver_api_version():
    """Highest CUDA version the installed driver supports (libcuda's cuDriverGetVersion), '' when unknown."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
        version = ctypes.c_int(0)
        if libcuda.cuDriverGetVersion(ctypes.byref(version)) == 0 and version.value > 0:
            return format_cuda_version(version.value)
    except (OSError, AttributeError):
        pass
    return ""


def gpu_identity(properties):
    """A string naming one physical GPU (or MIG instance) on its host: its UUID, else its PCI id."""
    return str(properties.uuid) if getattr(properties, "uuid", None) else (pci_id(properties) or properties.name)


def local_gpu_view(world):
    """This rank's GpuView, read from torch.cuda (device count respects CUDA_VISIBLE_DEVICES)."""
    visibility = describe_visibility()
    if not torch.cuda.is_available():
        build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        reason = f"torch {torch.__version__}, {build}: torch.cuda.is_available() is False; {visibility}"
        return GpuView(world.rank, world.host, world.local_rank, world.local_size, (), visibility, reason)
    visible = tuple(gpu_identity(torch.cuda.get_device_properties(index)) for index in range(torch.cuda.device_count()))
    return GpuView(world.rank, world.host, world.local_rank, world.local_size, visible, visibility)
