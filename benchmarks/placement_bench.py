"""Does pinning pay? ResNet-50 batch 8: 2 ranks pinned vs 2 ranks unpinned vs 1 rank using every CPU.

Each setting is a real `mpiexec` job of the runner; its total throughput (all samples of all ranks over
the common timed window) is read from the HDF5 file it writes. Unpinned ranks run as many threads as a
pinned rank's share, so affinity and memory policy are the only difference. The settings are
interleaved (pinned, unpinned, single, pinned, ...) for --repetitions rounds; the median of each is
reported, with the ratios pinned/unpinned and pinned/single.

    python benchmarks/placement_bench.py                        # resnet50-cpu, batch 8, 20 steps, 3 rounds
    python benchmarks/placement_bench.py --iterations 5 --repetitions 1 -- --model resnet18 --image-size 32

Flags after `--` go to every runner job unchanged.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def mpiexec():
    beside_python = Path(sys.executable).parent / "mpiexec"
    found = str(beside_python) if beside_python.exists() else shutil.which("mpiexec")
    if not found:
        raise SystemExit("no mpiexec: install the runner with its mpich extra")
    return found


def run_job(ranks, runner_args, output):
    """One `mpiexec -n RANKS python -m mpirunner ...` job; return (throughput, /ranks rows) from its file."""
    import h5py

    command = [mpiexec(), "-n", str(ranks), sys.executable, "-m", "mpirunner", *runner_args,
               "--no-progress", "--output", str(output)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"runner failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-3000:]}")
    with h5py.File(output) as h5:
        (run,) = h5["runs"].values()
        table = h5["ranks"][()]
        rows = [{name: (value.decode() if isinstance(value, bytes) else value)
                 for name, value in zip(table.dtype.names, row)} for row in table]
        return float(run.attrs["throughput"]), rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="resnet50-cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--single-threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="threads of the 1-rank job (default: every CPU this process may use)")
    parser.add_argument("--unpinned-threads", type=int, default=max(1, len(os.sched_getaffinity(0)) // 2),
                        help="threads of each unpinned rank (default: the share a pinned rank gets, so only "
                             "the pinning differs)")
    parser.add_argument("runner_args", nargs="*", help="more runner flags (after --)")
    options = parser.parse_args()

    common = ["--config", options.config, "--batch-size", str(options.batch_size),
              "--iterations", str(options.iterations), *options.runner_args]
    settings = {
        "2 ranks pinned": (2, ["--numa-aware", "yes"]),
        "2 ranks unpinned": (2, ["--numa-aware", "no", "--threads", str(options.unpinned_threads)]),
        f"1 rank, {options.single_threads} threads": (1, ["--threads", str(options.single_threads)]),
    }
    throughputs = {name: [] for name in settings}
    placements = {}
    with tempfile.TemporaryDirectory() as folder:
        for repetition in range(options.repetitions):
            for index, (name, (ranks, extra)) in enumerate(settings.items()):
                output = Path(folder) / f"r{repetition}-s{index}.h5"
                throughput, rows = run_job(ranks, [*common, *extra], output)
                throughputs[name].append(throughput)
                placements[name] = "; ".join(f"rank {r['rank']}: cpus {r['cpus']} x{r['threads']} threads"
                                             for r in rows)
                print(f"round {repetition + 1}: {name:<22s} {throughput:10.2f} samples/s", flush=True)

    medians = {name: statistics.median(values) for name, values in throughputs.items()}
    print(f"\n{' '.join([options.config, *options.runner_args])}, batch {options.batch_size}, {options.iterations} steps, "
          f"median of {options.repetitions} round(s); total throughput of all ranks")
    print(f"{'setting':<22s}  {'samples/s':>10s}  placement")
    for name, value in medians.items():
        print(f"{name:<22s}  {value:10.2f}  {placements[name]}")
    pinned, unpinned, single = medians.values()
    print(f"\npinned / unpinned: {pinned / unpinned:.3f}")
    print(f"pinned / single:   {pinned / single:.3f}")
    print(f"unpinned / single: {unpinned / single:.3f}")


if __name__ == "__main__":
    main()
