"""The run's file (mpirunner/runfile/): one typed Run from rank 0's build to every reader, the file written and read
in one place, the HDF5 schema unchanged (a run read and written back stores the same names, types and values)."""
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

from mpirunner.checks import ValidityRules
from mpirunner.runfile.build import DeviceFacts, Gathered, Judging, build_run, failed_run
from mpirunner.runfile.hdf5 import read_job, write_job
from mpirunner.runfile.run import Job, Run, RunPoint

REPO = Path(__file__).resolve().parent.parent


def _point(batch_size=4):
    return RunPoint(batch_size=batch_size, device_iterations=1, local_replicas=1, samples_per_step=batch_size,
                    model="resnet18", data="generated", precision="32.32", dtype="float32", image_size=32,
                    iterations_requested=50, warmup=2, input_pool_limit_bytes=1 << 30)


def _built(batch_size=4, steps=120, ranks=2, seed=0):
    """A Run built by rank 0's code from made-up gathered timings (no model, no MPI)."""
    rng = np.random.default_rng(seed)
    seconds = 0.01 + 0.001 * rng.random((ranks, steps))
    starts = np.cumsum(seconds + 0.0001, axis=1) - seconds
    timings = {"step_seconds": seconds, "step_start": starts, "batch_latency": seconds * 0.9,
               "compile_seconds": np.full(ranks, 0.5), "warmup_seconds": 0.01 + 0.001 * rng.random((ranks, 3))}
    rows = [{"host": "a", "barrier_wait_seconds": 0.001 * rank, "pool_steps": 4, "pool_bytes": 1000 + rank,
             "gpu_peak_memory_allocated_bytes": 10 + rank} for rank in range(ranks)]
    return build_run(f"bs{batch_size:05d}", _point(batch_size), Gathered(timings, rows, steps),
                     DeviceFacts({"first_call_compiles": False}, True, 1_000_000),
                     Judging(ValidityRules(min_iterations=10, max_cv_percent=50.0)))


def _job(runs):
    return Job.from_attrs({"world_size": 2, "backend": "cpu", "config": {"model": "resnet18", "batch_sizes": [4]},
                           "hosts": ["a"], "torch_version": "2.0"},
                          [{"rank": 0, "host": "a", "threads": 2}, {"rank": 1, "host": "a", "threads": 2}], runs)


def _stored(path):
    """Every attribute and dataset of a file: (type, value) by path, NaN-safe."""
    out = {}
    with h5py.File(path, "r") as h5:
        def attrs(node, where):
            for key, value in node.attrs.items():
                out[f"{where}@{key}"] = (type(value).__name__, repr(np.asarray(value).tolist()))

        def visit(name, item):
            attrs(item, name)
            if isinstance(item, h5py.Dataset):
                out[name] = (str(item.dtype), item[()].tobytes())
        attrs(h5, "/")
        h5.visititems(visit)
    return out


def test_a_built_run_is_typed_and_reads_back_equal(tmp_path):
    run = _built()
    assert run.status == "measured" and not run.failed and run.verdict.valid and run.verdict.reasons == ()
    assert run.point.samples_per_step == 4 and run.input.pool_bytes == 1001 and run.input.pool_limit_bytes == 1 << 30
    assert 0.9 < run.summary.latency.p50 / (1e3 * 0.0105) < 1.1  # ms
    assert run.summary.intervals.throughput.low < run.summary.throughput < run.summary.intervals.throughput.high
    assert run.compute.flops_per_sample == 1_000_000 and run.device == {"first_call_compiles": False}
    assert run.attrs()["latency_p50_ms"] == run.summary.latency.p50  # the unit-named twin is stored beside it
    write_job(tmp_path / "a.h5", _job([run]))
    back = read_job(tmp_path / "a.h5").run("bs00004")
    assert back.point == run.point and back.summary == run.summary and back.compute == run.compute
    assert back.attrs().keys() == run.attrs().keys()
    assert np.array_equal(back.arrays.step_seconds, run.arrays.step_seconds)
    assert list(back.arrays.get("gpu_peak_memory_allocated_bytes")) == [10, 11]


def test_reading_a_file_and_writing_it_back_stores_the_same_names_types_and_values(tmp_path):
    job = _job([_built(4), _built(8, seed=1), failed_run("bs00016", _point(16), "out of memory")])
    write_job(tmp_path / "first.h5", job)
    write_job(tmp_path / "again.h5", read_job(tmp_path / "first.h5"))
    first, again = _stored(tmp_path / "first.h5"), _stored(tmp_path / "again.h5")
    assert first == again
    assert first["runs/bs00016@status"][1] == "'failed'" and "runs/bs00016/step_seconds" not in first


def test_an_older_run_group_keeps_what_it_lacks_lacking(tmp_path):
    """A file written before the unit-named twins and without a verdict: written back as it was, read with
    defaults (valid, no reasons)."""
    old = {"batch_size": 2, "throughput": 10.0, "latency_p50": 1.5, "step_cv": 0.1}
    run = Run.from_attrs("bs00002", old)
    assert run.verdict.valid and run.summary.throughput == 10.0 and run.summary.latency.p50 == 1.5
    assert run.attrs() == old
    twins_only = Run.from_attrs("bs00002", {"batch_size": 2, "latency_p50_ms": 1.5})  # a future file: kept verbatim
    assert twins_only.attrs() == {"batch_size": 2, "latency_p50_ms": 1.5}


def test_arrays_are_read_on_first_access_only(tmp_path):
    write_job(tmp_path / "a.h5", _job([_built()]))
    run = read_job(tmp_path / "a.h5").run("bs00004")
    assert "step_seconds" in run.arrays and run.arrays._arrays == {}  # nothing read yet
    assert run.arrays.step_seconds.shape == (2, 120)
    assert set(run.arrays._arrays) == {"step_seconds"}
    counts, edges = run.arrays.read("histogram/counts", "histogram/edges").values()
    assert counts.sum() == 240 and edges.size == counts.size + 1


def test_amending_a_run_keeps_its_arrays_and_twins():
    run = _built()
    amended = run.amended({"peak_qps": 12.5, "throughput": 1.0})
    assert amended.scenario.peak_qps == 12.5 and amended.summary.throughput == 1.0
    assert amended.attrs()["throughput_samples_per_s"] == 1.0  # the twin follows its value
    assert amended.arrays is run.arrays


def test_runfile_and_report_import_without_torch_or_mpi4py():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['mpi4py'] = None; "
            "import mpirunner.runfile.hdf5, mpirunner.runfile.block, mpirunner.runfile.sweep, "
            "mpirunner.runfile.output, mpirunner.runfile.build, mpirunner.runfile.plain")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_exactly_one_module_under_mpirunner_imports_h5py():
    import ast

    importers = []
    for path in sorted((REPO / "mpirunner").rglob("*.py")):
        tree = ast.parse(path.read_text())
        names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        names += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
        if any(name.split(".")[0] == "h5py" for name in names):
            importers.append(path.relative_to(REPO).as_posix())
    assert importers == ["mpirunner/runfile/hdf5.py"]


def test_a_scenario_runs_throughput_is_its_achieved_rate_and_it_has_no_reference_figure():
    """build.scenario_throughput (runfile/shown.py): single-stream and server runs store the achieved rate in
    samples/s as `throughput` (what the runner prints), never the step-based reference harness figure; a server's
    batches are not its steps, so their bootstrap interval goes too."""
    from mpirunner.runfile.build import scenario_throughput

    steps = {"throughput": 50.0, "throughput_sum": 52.0, "throughput_reference": 61.0, "throughput_ci95_low": 45.0,
             "throughput_ci95_high": 55.0, "latency_mean": 20.0}
    single = scenario_throughput(dict(steps), {"scenario": "single-stream", "achieved_qps": 12.0}, samples_per_step=4)
    assert single["throughput"] == 48.0 and single["throughput_sum"] == 52.0  # 12 queries/s of 4 samples
    assert "throughput_reference" not in single and single["throughput_ci95_low"] == 45.0
    server = scenario_throughput(dict(steps), {"scenario": "server", "achieved_qps": 41.0}, samples_per_step=8)
    assert server["throughput"] == server["throughput_sum"] == 41.0  # one sample per query, not the batch size
    assert not any(key.startswith(("throughput_reference", "throughput_ci95")) for key in server)
    assert server["latency_mean"] == 20.0  # batch latency stays, under its own name
    stored = scenario_throughput(dict(steps), {"scenario": "server", "achieved_qps": 41.0, "throughput": 41.0,
                                               "throughput_sum": 41.0}, samples_per_step=8)
    assert stored["throughput"] == 41.0 and "throughput_reference" not in stored
