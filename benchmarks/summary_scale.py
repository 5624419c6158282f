"""How long `mpirunner-report summary` takes over many result files (issue 20: 500 files in under 10 s).

    python benchmarks/summary_scale.py --files 500

Writes FILES small synthetic result files (tests/summary_files.py: schema mpirunner/1, one run
each, four models, four batch sizes, 2 ranks x 40 steps) into a temporary folder, then times, each
in a fresh process as a user runs it: the table, the table written as CSV, trends by created time,
and the HTML page (which draws a histogram per run). Prints one line per case.

Then, in this process, the bootstrap a trend step runs (compare.time_ratio_interval on two
2-rank runs of 40 steps): the plain form (np.median over values[picks], picks drawn as compare
draws them) against compare's counting form, checking that both give the same numbers to the
last bit, and prints their ratio (compare draws the resampling once for these sizes and keeps it, as in a trend).
"""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

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


def plain_time_ratio_interval(base_values, new_values, seed=0):
    """compare.time_ratio_interval as a loop of np.median over the resampled values (the reference)."""
    from mpirunner.report import compare

    rng = np.random.default_rng(seed)
    medians = []
    for values in (new_values, base_values):  # NEW's draws first, as compare takes them
        rows = max(1, compare.CHUNK_ELEMENTS // values.size)
        blocks = [np.median(values[rng.integers(0, values.size, size=(min(rows, compare.RESAMPLES - done),
                                                                          values.size))], axis=1)
                  for done in range(0, compare.RESAMPLES, rows)]
        medians.append(np.concatenate(blocks))
    tail = (1.0 - compare.CONFIDENCE) / 2.0
    low, high = np.quantile(medians[0] / medians[1], [tail, 1.0 - tail])
    return float(np.median(new_values) / np.median(base_values)), float(low), float(high)


def bootstrap_ratio(pairs=200, steps=40):
    """Seconds per interval of the plain and the counting bootstrap on the same pairs; raises if they differ."""
    from mpirunner.report.compare import time_ratio_interval

    rng = np.random.default_rng(1)
    data = [(rng.lognormal(-5, 0.1, steps), rng.lognormal(-5, 0.1, steps)) for _ in range(pairs)]
    timings = []
    for judge in (plain_time_ratio_interval, time_ratio_interval):
        started = time.perf_counter()
        results = [judge(base, new) for base, new in data]
        timings.append((time.perf_counter() - started) / pairs)
        if judge is plain_time_ratio_interval:
            reference = results
    if results != reference:
        raise SystemExit("compare's bootstrap differs from the plain np.median bootstrap")
    return timings


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
    plain, counting = bootstrap_ratio()
    print(f"bootstrap of one interval (40 steps): plain np.median {plain * 1e3:.2f} ms, compare's "
          f"{counting * 1e3:.2f} ms, {plain / counting:.1f}x faster, same numbers")


if __name__ == "__main__":
    main()
