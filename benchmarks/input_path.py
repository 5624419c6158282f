"""Input path: does the runner measure itself? generated, real and synthetic data side by side.

A small-compute model at a large batch makes the input path visible on a CPU: each mode runs as a
user would run it (fresh process, one rank), in one sitting, and the script prints each mode's
host_gap (share of the window between steps), device_busy and throughput, then the throughput
ratios to synthetic data. Targets (issue 13): host_gap <= 1% for generated and real; generated
>= 0.95x synthetic.

    python benchmarks/input_path.py --model mobilenet_v3_small --image-size 224 --batch-size 256 --iterations 10
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np

from common import only_run, run_runner


def write_images(folder, count, size=256, seed=0):
    """`count` different JPEGs in one class folder (decoded once by the runner, before timing)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    target = Path(folder) / "class0"
    target.mkdir(parents=True)
    for index in range(count):
        pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(target / f"img{index:03d}.jpg", quality=90)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v3_small")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--images", type=int, default=64, help="JPEGs for --data real")
    args = parser.parse_args()
    common = ["--model", args.model, "--image-size", args.image_size, "--batch-size", args.batch_size,
              "--iterations", args.iterations, "--device", "cpu"]
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        write_images(folder, args.images)
        for mode in ("generated", "real", "synthetic"):
            extra = ["--data-path", folder] if mode == "real" else []
            _, runs, _ = run_runner([*common, "--data", mode, *extra])
            results[mode] = only_run(runs)
    print(f"{args.model}, {args.image_size} px, batch {args.batch_size}, {args.iterations} timed steps, 1 rank, CPU")
    print(f"{'data':10s} {'samples/s':>10s} {'host_gap':>9s} {'device_busy':>12s} {'pool':>14s}  verdict")
    for mode, attrs in results.items():
        verdict = "VALID" if attrs["valid"] else "INVALID: " + "; ".join(map(str, attrs["validity_reason"]))
        pool = f"{attrs['input_pool_steps']} x {attrs['input_pool_bytes'] / attrs['input_pool_steps'] / 2**20:.1f} MiB"
        print(f"{mode:10s} {attrs['throughput']:10.2f} {100 * attrs['host_gap_max']:8.2f}% "
              f"{100 * attrs['device_busy_min']:11.1f}% {pool:>14s}  {verdict}")
    synthetic = results["synthetic"]["throughput"]
    print(f"generated / synthetic: {results['generated']['throughput'] / synthetic:.3f}")
    print(f"real / synthetic: {results['real']['throughput'] / synthetic:.3f}")


if __name__ == "__main__":
    main()
