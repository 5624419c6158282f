"""How long `mpirunner-report summary` takes over many result files (issue 20: 500 files in under 10 s).

    python benchmarks/summary_scale.py --files 500

Writes FILES small synthetic result files (tests/summary_files.py: schema mpirunner/1, one run
each, four models, four batch sizes, 2 ranks x 40 steps) into a temporary folder, then times, each
in a fresh process as a user runs it: the table, the table written as CSV, trends by created time,
and the HTML page (which draws a histogram per run). Prints one line per case.
"""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.summary_files import write_result_file  # noqa: E402

MODELS = ("resnet18", "resnet50", "efficientnet-b0", "efficientnet-b4")


def write_files(folder, count):
    for index in range(count):
        write_result_file(folder / f"run{index:04d}.h5", batch_sizes=(2 ** (index % 4),), model=MODELS[index % 4],
                          world_size=2, steps=40, seed=index % 7, slowdown=1.0 + 0.01 * (index % 5),
                          created=f"2026-11-{1 + index % 28:02d}T{index % 24:02d}:00:00+00:00",
                          git_commit=f"{index:040x}")


def timed(argv):
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "mpirunner.report", *argv], cwd=REPO, capture_output=True,
                            text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{result.stderr}")
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary) / "results"
        folder.mkdir()
        started = time.perf_counter()
        write_files(folder, args.files)
        print(f"wrote {args.files} files in {time.perf_counter() - started:.1f} s")
        cases = (("table", ["summary", str(folder)]),
                 ("table + CSV", ["summary", str(folder), "--csv", str(Path(temporary) / "all.csv")]),
                 ("trends --by created", ["summary", str(folder), "--by", "created"]),
                 ("HTML page", ["summary", str(folder), "--html", str(Path(temporary) / "all.html")]))
        for name, argv in cases:
            print(f"{name:<22} {timed(argv):6.2f} s  (mpirunner-report {' '.join(argv[:1])} ... {' '.join(argv[2:3])})")


if __name__ == "__main__":
    main()
