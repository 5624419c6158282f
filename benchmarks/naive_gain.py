"""Gain of a -cpu config over naive float32 eager NCHW, one process each, measured in the same run.

    python benchmarks/naive_gain.py --config resnet50-cpu --repetitions 3

'naive' is the same config with --precision 32.32 --no-channels-last --compile none; both are
single processes (no launcher). Runs alternate; the ratio of medians is reported. Target: >= 2.5x.
"""
import argparse
import statistics
import sys

from common import REPO, only_run, run_runner

NAIVE = ["--precision", "32.32", "--no-channels-last", "--compile", "none"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="resnet50-cpu")
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    measured = {"config": [], "naive": []}
    for repetition in range(args.repetitions):
        order = ["config", "naive"] if repetition % 2 == 0 else ["naive", "config"]
        for kind in order:
            _, runs, _ = run_runner(["--config", args.config, *(NAIVE if kind == "naive" else [])])
            measured[kind].append(float(only_run(runs)["throughput"]))
        print(f"repetition {repetition + 1}: {args.config} {measured['config'][-1]:.2f} samples/s, "
              f"naive float32 eager NCHW {measured['naive'][-1]:.2f} samples/s", flush=True)
    gain = statistics.median(measured["config"]) / statistics.median(measured["naive"])
    print(f"gain of {args.config} over naive float32 eager NCHW (ratio of medians): {gain:.2f}x")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
