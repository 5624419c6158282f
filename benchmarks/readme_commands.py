"""The README's two run commands, as a new user types them: how many tries are VALID, and the longest line.

    python benchmarks/readme_commands.py [--tries 3]

Runs `python -m mpirunner --config resnet50-cpu` and the README's `mpiexec -n 2 ... --batch-size 1,4,8
--iterations 20` sweep TRIES times each, alternating, each in a fresh temporary folder (so `results/`
starts empty and nothing is resumed), with the progress bar off (stderr is not a terminal here).
Prints, per try, each batch size's verdict read from the written file, the wall time, and the longest
line of standard output; exit 1 when a run is INVALID or a stdout line is over 160 characters
(issue 27's first-screen rule). Meant for a quiet machine: other load makes steps uneven and can
fail the timing rules, which is what they are for.

Before each try, `--noise-seconds` (default 10; 0 skips it) runs a bare PyTorch loop (ResNet-50, batch 1,
eager, one thread) on every CPU at once, as the sweep's ranks load them, and prints each CPU's step-time cv: the
machine's own unevenness at that moment, with no runner in the way. A try whose bare loop is already near the
runner's 10% --max-cv says the machine, not the runner, was uneven.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.common import mpiexec  # noqa: E402

MAX_LINE = 160
COMMANDS = {
    "single": [sys.executable, "-m", "mpirunner", "--config", "resnet50-cpu"],
    "sweep": [mpiexec(), "-n", "2", sys.executable, "-m", "mpirunner", "--config", "resnet50-cpu",
              "--batch-size", "1,4,8", "--iterations", "20"],
}


def verdicts(path):
    """{run name: 'VALID' or 'INVALID: reasons'} of a result file, through the runner's own reader."""
    from mpirunner.runfile.hdf5 import read_job

    job = read_job(path)
    return {run.name: "VALID" if run.verdict.valid else "INVALID: " + "; ".join(run.verdict.reasons)
            for run in job.runs}


BARE_LOOP = """
import sys, time, numpy, torch, torchvision
torch.set_num_threads(1)
model = torchvision.models.resnet50().eval().to(memory_format=torch.channels_last)
image = torch.randn(1, 3, 224, 224).to(memory_format=torch.channels_last)
with torch.inference_mode():
    for _ in range(5):
        model(image)
    seconds, end = [], time.perf_counter() + float(sys.argv[1])
    while time.perf_counter() < end:
        begin = time.perf_counter()
        model(image)
        seconds.append(time.perf_counter() - begin)
seconds = numpy.asarray(seconds)
print(f"{100 * seconds.std(ddof=1) / seconds.mean():.1f}")
"""


def machine_noise(seconds):
    """Each CPU's step-time cv (%) of the bare loop, run on every CPU at once (taskset pins one per CPU)."""
    loops = [subprocess.Popen(["taskset", "-c", str(cpu), sys.executable, "-c", BARE_LOOP, str(seconds)],
                              stdout=subprocess.PIPE, text=True) for cpu in sorted(os.sched_getaffinity(0))]
    return [float(loop.communicate()[0]) for loop in loops]


def run_once(name):
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / f"{name}.h5"
        begin = time.perf_counter()
        result = subprocess.run([*COMMANDS[name], "--output", str(output)], cwd=folder, capture_output=True,
                                text=True)
        seconds = time.perf_counter() - begin
        longest = max((len(line) for line in result.stdout.splitlines()), default=0)
        found = verdicts(output) if output.exists() else {}
    return result.returncode, seconds, longest, found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=3)
    parser.add_argument("--noise-seconds", type=float, default=10.0, help="bare loop before each try (0: none)")
    args = parser.parse_args()
    failures = 0
    for attempt in range(1, args.tries + 1):
        if args.noise_seconds > 0:
            cvs = ", ".join(f"{cv:.1f}%" for cv in machine_noise(args.noise_seconds))
            print(f"try {attempt} machine: bare loop step-time cv per CPU {cvs}", flush=True)
        for name in COMMANDS:
            code, seconds, longest, found = run_once(name)
            bad = code != 0 or longest > MAX_LINE or not found or any(v != "VALID" for v in found.values())
            failures += bad
            print(f"try {attempt} {name}: exit {code}, {seconds:.0f} s, longest stdout line {longest} chars", flush=True)
            for run, verdict in found.items():
                print(f"    {run}: {verdict}", flush=True)
    print(f"{failures} of {2 * args.tries} commands not VALID or over {MAX_LINE} chars")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
