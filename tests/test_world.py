"""world.agree: the one consensus primitive for bad input that only some ranks see."""
import ast
import subprocess
import sys

import pytest

from mpirunner.errors import UsageError
from mpirunner.mpi.world import agree
from tests.conftest import REPO, mpiexec_path

# Each rank reports what agree() gave it: rank 1 alone finds a problem, rank 0 must raise it too.
AGREE_SCRIPT = """
from mpirunner.errors import UsageError
from mpirunner.mpi.world import init_world
world = init_world()
def check():
    if world.rank == 1:
        raise UsageError("file missing here")
    return world.rank * 10
try:
    outcome = f"result {world.agree(check)}"
except UsageError as error:
    outcome = f"error {error}"
outcomes = world.gather((outcome, world.agree(lambda: world.rank + 100)))
if world.is_root:
    print(repr(outcomes))
"""


def test_without_a_launcher_agree_just_runs_the_check(monkeypatch):
    for variable in ("PMI_RANK", "HYDRA_CONTROL_FD", "PMI_FD", "OMPI_COMM_WORLD_RANK", "PMIX_RANK",
                     "PRTE_LAUNCHED", "SLURM_PROCID", "SLURM_STEP_ID"):
        monkeypatch.delenv(variable, raising=False)
    assert agree(lambda: "built") == "built"
    with pytest.raises(UsageError, match="^bad flag$"):
        agree(lambda: (_ for _ in ()).throw(UsageError("bad flag")))


def test_every_rank_raises_the_error_one_rank_saw():
    result = subprocess.run([mpiexec_path(), "-n", "3", sys.executable, "-c", AGREE_SCRIPT], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    outcomes = ast.literal_eval(result.stdout.strip())
    assert outcomes[1] == ("error file missing here", 101)  # its own error, unchanged
    for rank in (0, 2):  # nobody went on alone
        assert outcomes[rank][0].startswith("error file missing here (seen by rank 1 on ")
        assert outcomes[rank][1] == rank + 100  # a passing check returns its value on every rank
