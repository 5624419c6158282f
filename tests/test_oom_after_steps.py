"""Out of memory after the timed steps is a result too (docs/failure-behaviour.md): in the gather of timings,
the accuracy gather, the output check or the per-rank values, on any rank, the size becomes a failed run
group naming the rank and the stage, the sweep stops going up (exit 5), and every rank leaves together."""
import pytest

from mpirunner.errors import UsageError
from mpirunner.mpi.faults import Fault, parse_fault
from mpirunner.mpi.agreement import SizeAgreement, SizeFailed
from mpirunner.mpi.world import World
from mpirunner.runfile.plain import read_results
from tests.conftest import TINY, run_cli, write_jpegs
from tests.test_cluster_reality import _clean_env

FAST = [*TINY, "--device", "cpu", "--threads", "1", "--iterations", "3", "--min-iterations", "1"]


@pytest.mark.parametrize("rank, stage, words, extra", [
    (1, "output-check", "in the output check", ["--check-outputs"]),
    (0, "gather", "in the gather of timings", []),
    (1, "accuracy", "in the accuracy gather", ["--data", "real"]),
])
def test_out_of_memory_after_the_steps_is_a_failed_size_and_the_sweep_stops(tmp_path, rank, stage, words, extra):
    output = tmp_path / "sweep.h5"
    if "real" in extra:
        write_jpegs(tmp_path / "images" / "class0", 4)
        extra = [*extra, "--data-path", tmp_path / "images"]
    result = run_cli([*FAST, *extra, "--batch-size", "1,2,4", "--output", output], ranks=2, timeout=180,
                     env=_clean_env(MPIRUNNER_FAULT=f"oom:rank={rank}:run=2:stage={stage}"))
    assert result.returncode == 5, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "MPI_Abort" not in result.stderr
    [line] = [line for line in result.stdout.splitlines() if "failed" in line]
    assert "batch size 2" in line and f"out of memory on rank {rank} (" in line and words in line, line
    data = read_results(output)
    assert list(data["runs"]) == ["bs00001", "bs00002"], "bs 4 is not tried"
    assert data["runs"]["bs00001"]["attrs"]["status"] == "measured"
    failed = data["runs"]["bs00002"]
    assert failed["attrs"]["status"] == "failed" and set(failed) == {"attrs"}
    reason = failed["attrs"]["failure_reason"]
    assert f"out of memory on rank {rank} (" in reason and words in reason and "123.0 GiB" in reason


def test_a_stage_fault_parses_and_excludes_a_step():
    assert parse_fault("oom:rank=1:stage=output-check") == Fault("oom", rank=1, stage="output-check")
    with pytest.raises(UsageError, match="stage="):
        parse_fault("oom:stage=somewhere")
    with pytest.raises(UsageError, match="exclude"):
        parse_fault("oom:stage=gather:step=2")


class _OneRank:
    """A world of one rank: enough to follow a stage's own logic without MPI."""

    rank, host, size, is_root = 0, "here", 1, True

    def gather(self, value):
        return [value]

    def max(self, value):
        return value

    agree = World.agree


def test_a_stage_runs_local_gather_and_combine_and_names_itself_when_memory_runs_out():
    agreement = SizeAgreement(_OneRank())
    assert agreement.stage("the sum", lambda: 2, sum) == 2
    assert agreement.stage("labels", lambda: None, len, optional=True) is None

    def combine(rows):
        raise MemoryError("Unable to allocate 3.00 GiB for an array")

    with pytest.raises(SizeFailed):
        agreement.stage("the sum", lambda: 2, combine)
    assert agreement.own_reason == "out of memory on rank 0 (here) in the sum: asked for 3.0 GiB"
    with pytest.raises(ValueError):  # not memory: the job's failure path, as before
        agreement.stage("the sum", lambda: int("x"), sum)


def test_running_out_inside_the_receive_of_gather_rows_is_not_a_result():
    """Rank 0 between the two halves of world.gather_rows: the others may still be sending, so no agreement."""
    def gather_rows(value, ok):
        raise MemoryError("Unable to allocate 9.00 GiB for an array")

    with pytest.raises(MemoryError):
        SizeAgreement(_OneRank()).stage("the gather of timings", lambda: 1, list, gather=gather_rows)
