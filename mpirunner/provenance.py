"""The file's root attributes: what a results file needs to be reproduced (settings, versions, hosts, commit)."""
import os
from pathlib import Path

from mpirunner import __version__


def git_commit():
    """Commit of the mpirunner checkout, read from .git without shelling out ('' when not a checkout)."""
    git = Path(__file__).resolve().parent.parent / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        if (git / ref).exists():
            return (git / ref).read_text().strip()
        packed = (git / "packed-refs").read_text().splitlines()
        return next((line.split()[0] for line in packed if line.endswith(" " + ref)), "")
    except OSError:
        return ""


def job_attrs(config, world, backend, model, created, rank_rows):
    """The root attributes of the file (rank_rows: the gathered /ranks rows, on rank 0)."""
    import torch
    from mpi4py import MPI

    from mpirunner.mpi.launcher import library_name
    from mpirunner.mpi.world import detect_launcher

    attrs = {
        "mpirunner_version": __version__,
        "created": created.isoformat(timespec="seconds"),
        "argv": " ".join(config.argv),
        "config": config.settings(),
        "config_file_text": config.config_text,
        "config_name": config.name,
        "world_size": world.size,
        "hosts": sorted({row["host"] for row in rank_rows}) if world.is_root else [],
        "backend": backend.name,
        "launcher": detect_launcher(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID", ""),
        "torch_version": torch.__version__,
        "mpi_version": library_name(MPI.Get_library_version()),  # its first line (Open MPI's ends in a NUL byte)
        "poptorch_version": "",
        "git_commit": git_commit(),
        "image_size": model.image_size,
        **model.precision_attrs(backend, config),  # dtype, weights_dtype, input_dtype, ...
        **backend.metadata(),
    }
    attrs.setdefault("device_name", backend.name)
    return attrs
