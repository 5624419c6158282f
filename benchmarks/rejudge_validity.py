"""Re-judge the validity of stored runs with the timing rules of this checkout (or of an earlier commit).

The same step_seconds arrays, judged twice, are a fairer comparison of two rule sets than new runs on
a loaded machine. Each run's limits come from its stored config (--min-iterations, --max-cv,
--min-duration, --until-stable ...); --max-cv overrides the stored one (e.g. to judge with the default).

    python benchmarks/rejudge_validity.py /tmp/h2/job*.h5
    python benchmarks/rejudge_validity.py --rules-from HEAD~3 --max-cv 10 /tmp/h2/job*.h5
"""
import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rules_module(revision):
    """mpirunner/checks/rules.py of this checkout, or of `revision` (git show), loaded on its own."""
    if revision is None:
        from mpirunner.checks import rules
        return rules
    text = subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:mpirunner/checks/rules.py"],
                          check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "rules_at_revision.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("rules_at_revision", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def judge(path, rules, max_cv):
    """[(run, stored verdict, rejudged reasons)] of every run of one file."""
    verdicts = []
    with h5py.File(path, "r") as handle:
        config = yaml.safe_load(handle.attrs["config"])
        hosts = list(np.asarray(handle["ranks"]["host"]).astype(str)) if "host" in handle["ranks"].dtype.names else None
        for name, run in handle["runs"].items():
            limits = rules.ValidityRules(
                min_iterations=config["min_iterations"],
                max_cv_percent=config["max_cv"] if max_cv is None else max_cv,
                min_duration=config["min_duration"], until_stable=config["until_stable"],
                window_steps=config["iterations"], stability_percentage=config["stability_percentage"],
                max_windows=config["max_windows"])
            checks = rules.timing_checks(run["step_seconds"][()], limits, timed_seconds=float(run.attrs["timed_seconds"]),
                                         windows=int(run.attrs.get("windows", 0)), hosts=hosts,
                                         warmup_seconds=run["warmup_seconds"][()] if "warmup_seconds" in run else None)
            stored = "VALID" if bool(run.attrs["valid"]) else "INVALID"
            verdicts.append((name, stored, [check.reason for check in checks if not check.passed]))
    return verdicts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--rules-from", metavar="REVISION", help="judge with rules.py of this git revision")
    parser.add_argument("--max-cv", type=float, help="judge with this --max-cv instead of the stored one")
    args = parser.parse_args()
    rules = rules_module(args.rules_from)
    valid = total = 0
    for path in args.files:
        for name, stored, reasons in judge(path, rules, args.max_cv):
            total += 1
            valid += not reasons
            verdict = "VALID" if not reasons else "INVALID: " + "; ".join(reason.split(" (remedy")[0] for reason in reasons)
            print(f"{path}:{name}  stored {stored:7s}  rejudged {verdict}")
    print(f"{valid} of {total} runs VALID (rules of {args.rules_from or 'this checkout'}, "
          f"--max-cv {'as stored' if args.max_cv is None else f'{args.max_cv:g}'})")


if __name__ == "__main__":
    main()
