"""Helpers shared by the IPU tests: the strict poptorch/popdist stand-in in tests/fake_poptorch made
importable, the environment a real poprun gives each instance, and a backend built as job.py builds it."""
import dataclasses
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

FAKE = Path(__file__).resolve().parent / "fake_poptorch"
FAKE_MODULES = ("poptorch", "popdist", "popart")
MPI_RANK_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "PMI_RANK",
                      "PMI_SIZE")


def poprun_env(instances, replicas, ipus_per_replica=1, rank=0):
    """What a real poprun exports to one instance: its mpirun -x list plus Open MPI's own rank variables.
    There is no instance-count variable: popdist derives it from total / local replicas."""
    local = replicas // instances
    return {"POPDIST_NUM_TOTAL_REPLICAS": str(replicas), "POPDIST_NUM_IPUS_PER_REPLICA": str(ipus_per_replica),
            "POPDIST_NUM_LOCAL_REPLICAS": str(local), "POPDIST_UNIFORM_REPLICAS_PER_INSTANCE": "1",
            "POPDIST_REPLICA_INDEX_OFFSET": str(rank * local), "POPDIST_LOCAL_INSTANCE_INDEX": str(rank),
            "OMPI_COMM_WORLD_SIZE": str(instances), "OMPI_COMM_WORLD_RANK": str(rank)}


def forget_fake_modules():
    for name in list(sys.modules):
        if name.split(".")[0] in FAKE_MODULES:
            del sys.modules[name]


@pytest.fixture
def fake_sdk(monkeypatch):
    """The stand-in importable as poptorch/popdist/popart (yielded: its poptorch), with an empty record and a
    clean environment. FAKE_POPTORCH_SDK is read at import: set it, then call reimport_fake()."""
    forget_fake_modules()
    monkeypatch.syspath_prepend(str(FAKE))
    for key in list(os.environ):
        if (key.startswith(("POPDIST_", "FAKE_POPTORCH_")) or key in MPI_RANK_VARIABLES
                or key in ("POPLAR_ENGINE_OPTIONS", "POPTORCH_IPU_MODEL", "POPTORCH_CACHE_DIR")):
            monkeypatch.delenv(key)
    yield fake_poptorch()
    forget_fake_modules()


def fake_poptorch():
    """The stand-in's poptorch module (imported now, so after the test set its environment), record cleared."""
    import poptorch

    poptorch.RECORD.clear()
    return poptorch


def reimport_fake():
    """The stand-in imported afresh (after a FAKE_POPTORCH_SDK change); returns its poptorch."""
    forget_fake_modules()
    return fake_poptorch()


def world(size=1, rank=0, local_size=None, extremes=None):
    """A World stand-in; `extremes`: the (min, max) pairs the other ranks contribute to allgather."""
    others = list(extremes or [])
    return SimpleNamespace(rank=rank, size=size, local_rank=rank, local_size=size if local_size is None else local_size,
                           host="test", is_root=rank == 0, allgather=lambda value: [value, *others],
                           bcast=lambda value: value)


def config(command_line):
    from mpirunner.cli import build_parser
    from mpirunner.config import resolve_config

    argv = command_line.split() if isinstance(command_line, str) else list(command_line)
    return resolve_config(vars(build_parser().parse_args(argv)), argv=argv)


def prepared_backend(run_config, run_world):
    """IpuBackend with the run's benchmark model built as job.py builds it (network swapped for resnet18 @ 32 px)."""
    from mpirunner.backends.ipu import IpuBackend
    from mpirunner.models.assembly import build_benchmark_model

    backend = IpuBackend(run_config, run_world)
    model = build_benchmark_model(dataclasses.replace(run_config, model="resnet18", image_size=32),
                                  backend.half_dtype())
    backend.prepare(model.module, model.image_size)
    return backend, model


def step_input(run_config, backend, model, batch_size):
    from mpirunner.data import image_generator, random_images, step_shape

    shape = step_shape(batch_size, run_config.device_iterations * backend.local_replicas(), model.image_size)
    return random_images(shape, model.input_dtype, image_generator(0))


def option_calls(poptorch):
    return [(event["call"], event["args"], event["kwargs"]) for event in poptorch.RECORD
            if event["call"].startswith(("Options", "poptorch.Options", "popdist"))]


def fake_env(record, **extra):
    """Environment for a `python -m mpirunner` subprocess that imports the stand-in and records into `record`."""
    paths = [str(FAKE)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {"PYTHONPATH": os.pathsep.join(paths), "FAKE_POPTORCH_RECORD": str(record), **extra}
