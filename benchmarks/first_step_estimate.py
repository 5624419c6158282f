"""How far the first estimate of a long step (the line before the first step) is from the step measured after it.

    python benchmarks/first_step_estimate.py            # the default cases, one process each
    python benchmarks/first_step_estimate.py --cases "resnet50 224 32.32 4 2"

Each case runs `python -m mpirunner --model M --image-size S --precision P --batch-size B --device-iterations D
--iterations 2 --warmup-iterations 0 --device cpu` with MPIRUNNER_LONG_STEP_SECONDS=0, so that every point is
announced; the table sets the estimate from that line against the first call (compile_seconds) and the median
timed step read from the HDF5 file. A ratio of 1 is a perfect estimate; the line's rounding is part of it.
Timings move with other load on the machine: the GEMM rate behind the estimate is timed in the same process
just before the first step, so load shifts both sides, but not always by the same amount.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parent.parent
CASES = ["resnet18 32 32.32 8 4", "resnet50 224 32.32 4 2", "efficientnet-b0 224 32.32 8 2",
         "efficientnet-b4 380 32.32 2 2", "efficientnet-b4 380 16.16 2 1"]
UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0}
ESTIMATE = re.compile(r"estimate \(FLOPs / GEMM rate\) ([0-9.]+) (s|min|h) a step")


def run_case(model, image_size, precision, batch_size, device_iterations):
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "estimate.h5"
        command = [sys.executable, "-m", "mpirunner", "--device", "cpu", "--model", model, "--image-size", image_size,
                   "--precision", precision, "--batch-size", batch_size, "--device-iterations", device_iterations,
                   "--iterations", "2", "--warmup-iterations", "0", "--no-progress", "--output", str(output)]
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                                env={**os.environ, "MPIRUNNER_LONG_STEP_SECONDS": "0"})
        if result.returncode != 0:
            raise SystemExit(f"runner failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-3000:]}")
        found = ESTIMATE.search(result.stderr)
        if found is None:
            raise SystemExit(f"no estimate line in:\n{result.stderr}")
        estimate = float(found.group(1)) * UNITS[found.group(2)]
        with h5py.File(output) as h5:
            (run,) = h5["runs"].values()
            first_call = float(run["compile_seconds"][0])
            step = float(np.median(run["step_seconds"][0]))
    return estimate, first_call, step


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=CASES,
                        help="'MODEL IMAGE_SIZE PRECISION BATCH DEVICE_ITERATIONS' each")
    args = parser.parse_args()
    print(f"{'case':34s} {'estimate s':>10s} {'first call s':>12s} {'step s':>8s} {'first/est':>9s} {'step/est':>8s}")
    for case in args.cases:
        estimate, first_call, step = run_case(*case.split())
        print(f"{case:34s} {estimate:10.3g} {first_call:12.3g} {step:8.3g} {first_call / estimate:9.2f} "
              f"{step / estimate:8.2f}", flush=True)


if __name__ == "__main__":
    main()
