"""False alarms and power of the warm-up / slowing-down and straggler rules on seeded synthetic step series.

Series: log-normal AR(1) noise (lag-1 correlation phi, 4% spread by default) with 3% outlier steps
2-8x slower, as a shared host produces; then the same noise with a real warm-up (first third ~15%
slower on average, decaying) or a real slowdown (last third 10% slower, sustained). Each count is out
of --seeds series; --rules-from judges with the rules of a git revision as well (e.g. before a change).
Stragglers: two ranks of such noise (10% outlier steps), as they are and with rank 1 40% slower.

    python benchmarks/trend_rule_power.py --rules-from f9d503d~1
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.rejudge_validity import rules_module  # noqa: E402


def wandering(seed, steps, sigma=0.04, phi=0.7, outliers=0.03, median=0.015):
    """One rank's steps [1, steps]: log-normal AR(1) noise (lag-1 correlation phi, spread sigma) around `median`
    and a few steps 2-8x slower (another process took the core). tests/test_trend_noise.py uses it too."""
    rng = np.random.default_rng(seed)
    noise = np.empty(steps)
    noise[0] = rng.normal(0.0, sigma)
    for step in range(1, steps):
        noise[step] = phi * noise[step - 1] + rng.normal(0.0, sigma * np.sqrt(1 - phi ** 2))
    series = median * np.exp(noise)
    slow = rng.random(steps) < outliers
    series[slow] *= rng.uniform(2.0, 8.0, slow.sum())
    return series[None, :]


def warming_up(seed, steps, **noise):
    series = wandering(seed, steps, **noise)
    third = steps // 3
    decay = np.exp(-np.arange(third) / (third / 2))
    series[0, :third] *= 1 + 0.15 * decay / decay.mean()
    return series


def slowing_down(seed, steps, **noise):
    series = wandering(seed, steps, **noise)
    series[0, -(steps // 3):] *= 1.10
    return series


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules-from", metavar="REVISION", help="also judge with rules.py of this git revision")
    parser.add_argument("--seeds", type=int, default=200)
    args = parser.parse_args()
    judges = {"this checkout": rules_module(None)}
    if args.rules_from:
        judges[args.rules_from] = rules_module(args.rules_from)
    print(f"{'series':>13} {'steps':>5} {'phi':>4}  " + "  ".join(f"{name:>14}" for name in judges))
    for make in (wandering, warming_up, slowing_down):
        for steps in (60, 200):
            for phi in (0.0, 0.5, 0.8, 0.9):
                fired = [sum(not rules.warmed_up(make(seed, steps, phi=phi)).passed for seed in range(args.seeds))
                         for rules in judges.values()]
                print(f"{make.__name__:>13} {steps:5d} {phi:4.1f}  "
                      + "  ".join(f"{count:>8d}/{args.seeds:<5d}" for count in fired))

    print(f"\n{'stragglers':>13} {'steps':>5} {'spread':>6}  " + "  ".join(f"{name:>14}" for name in judges))
    for slower in (1.0, 1.4):
        for steps in (30, 60, 200):
            for sigma in (0.04, 0.3):
                fired = []
                for rules in judges.values():
                    count = 0
                    for seed in range(args.seeds):
                        pair = np.vstack([wandering(2 * seed, steps, sigma, 0.7, 0.1),
                                          wandering(2 * seed + 1, steps, sigma, 0.7, 0.1)])
                        pair[1] *= slower
                        count += not rules.stragglers(pair, None)[0].passed
                    fired.append(count)
                label = "as they are" if slower == 1.0 else "rank 1 +40%"
                print(f"{label:>13} {steps:5d} {sigma:6.2f}  " + "  ".join(f"{count:>8d}/{args.seeds:<5d}" for count in fired))


if __name__ == "__main__":
    main()
