"""benchmarks/overhead.py's timing loop, with a CPU double of the CUDA synchronisation it uses on a GPU."""
import sys

from tests.conftest import REPO


def test_bare_loop_times_each_step_up_to_its_synchronisation():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import overhead
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    events = []
    seconds = overhead.time_steps(lambda: events.append("step"), iterations=4, warmup=2,
                                  synchronize=lambda: events.append("sync"))
    assert len(seconds) == 4 and all(s >= 0 for s in seconds)
    # 3 untimed calls, one sync, then every timed step is followed by its own sync (as on CUDA)
    assert events == ["step"] * 3 + ["sync"] + ["step", "sync"] * 4
