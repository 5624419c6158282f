"""A server query that finds its rank idle vs single-stream's back-to-back queries, in one sitting.

Runs single-stream, then a server run at about 5% load per rank, with the same model; prints the p50
of each one's step time (end - start) and of the server queries' wait before their step, for queries
whose rank's previous query had ended before they were scheduled. The ratio shows what the host adds
when a rank goes from waiting to working; the wait shows what the server machinery adds.

    python benchmarks/server_idle.py --ranks 1
    python benchmarks/server_idle.py --ranks 2
"""
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

from common import REPO, mpiexec
from mpirunner.scenarios import QueryLog

MODEL = ["--model", "resnet18", "--image-size", "32", "--device", "cpu", "--threads", "1", "--no-progress"]


def queries(args, ranks):
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "run.h5"
        command = [mpiexec(), "-n", str(ranks), sys.executable, "-m", "mpirunner", *MODEL, *map(str, args),
                   "--output", str(output)]
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"runner failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-3000:]}")
        with h5py.File(output) as h5:
            (group,) = h5["runs"].values()
            return {key: group["queries"][key][()] for key in group["queries"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--queries", type=int, default=120, help="server queries in all ranks together")
    options = parser.parse_args()
    single = queries(["--scenario", "single-stream", "--iterations", 150, "--max-cv", 1000], options.ranks)
    single_step = 1e3 * np.median(single["end"] - single["start"])
    total_qps = 0.05 * options.ranks / (single_step / 1e3)
    server = queries(["--scenario", "server", "--batch-size", 1, "--target-qps", f"{total_qps:.3f}",
                      "--min-duration", f"{options.queries / total_qps:.2f}"], options.ranks)
    idle = QueryLog(**server).found_idle()
    idle_step = 1e3 * np.median((server["end"] - server["start"])[idle])
    wait = 1e3 * np.median((server["start"] - server["scheduled"])[idle])
    print(f"{options.ranks} rank(s): single-stream step p50 {single_step:.3f} ms; server, {idle.sum()} queries that "
          f"found their rank idle: step p50 {idle_step:.3f} ms ({idle_step / single_step:.3f}x), wait p50 {wait:.4f} ms")


if __name__ == "__main__":
    main()
