"""How close each -cpu config gets to the hardware: utilisation of the GEMM peak measured in the same run.

    python benchmarks/utilization.py --ranks 2 --configs resnet50-cpu efficientnet-b0-cpu efficientnet-b4-cpu resnext101-cpu

Each config runs as `mpiexec -n RANKS python -m mpirunner --config C --measure-peak`; the table shows
throughput, FLOPs per sample, achieved GFLOP/s, the summed GEMM peak and the utilisation (achieved / peak).
"""
import argparse
import sys

from common import REPO, only_run, run_runner


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--configs", nargs="+",
                        default=["resnet50-cpu", "efficientnet-b0-cpu", "efficientnet-b4-cpu", "resnext101-cpu"])
    parser.add_argument("extra", nargs="*", help="more runner flags (after --)")
    args = parser.parse_args()
    print(f"{'config':22s} {'samples/s':>10s} {'GFLOP/sample':>13s} {'GFLOP/s':>9s} {'peak GFLOP/s':>13s} "
          f"{'utilisation':>11s} {'compile s':>9s}  verdict")
    for name in args.configs:
        _, runs, _ = run_runner(["--config", name, "--measure-peak", *args.extra], ranks=args.ranks)
        run = only_run(runs)
        print(f"{name:22s} {run['throughput']:10.2f} {run['flops_per_sample'] / 1e9:13.3f} "
              f"{run['achieved_flops'] / 1e9:9.1f} {run['peak_flops'] / 1e9:13.1f} {run['utilization']:11.3f} "
              f"{run['compile_seconds_max']:9.1f}  {'VALID' if run['valid'] else 'INVALID'}", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
