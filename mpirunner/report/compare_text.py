"""The printed form of `mpirunner-report compare`: NEW/BASE per batch size, each verdict with what decided it.

A sibling of text.py (single files) and summary_text.py (many files); works on compare.compare_files' results.
"""
import math

from mpirunner.report.bootstrap import CONFIDENCE

SHOWN = {"regressed": "REGRESSED", "invalid-new": "INVALID (new)", "excluded-invalid": "excluded (base INVALID)",
         "different-configuration": "DIFFERENT CONFIGURATION (not judged)"}


def verdict_text(pair):
    """'same (below the 10% noise floor)', 'REGRESSED (beyond run-to-run noise of 3+3 runs: ±3.2%)': the verdict and
    which test decided it."""
    shown = SHOWN.get(pair.status, pair.status)
    return f"{shown} ({pair.reason})" if pair.reason else shown


def interval_text(pair):
    """'ratio [low, high]': the between-run interval when a spread was measured, else the bootstrap one."""
    if not math.isfinite(pair.ratio):
        return "n/a"
    low, high = ((pair.between_low, pair.between_high) if math.isfinite(pair.between_low)
                 else (pair.low, pair.high))
    return f"{pair.ratio:.3f} [{low:.3f}, {high:.3f}]"


def side_text(name, datas):
    """'base: a.h5' or 'base (3 runs): a.h5, b.h5, c.h5'."""
    paths = ", ".join(str(data["path"]) for data in datas)
    return f"{name}:{' ' * (5 - len(name))}{paths}" if len(datas) == 1 else f"{name} ({len(datas)} runs): {paths}"


def format_comparison(bases, news, results, threshold_percent, noise_floor_percent):
    """The comparison as a table: throughput and latency ratios (NEW/BASE), the ratio that decided with its
    interval, the quantity that decided, the verdict and what decided it; INVALID runs marked; notes under it."""
    bases, news = (side if isinstance(side, list) else [side] for side in (bases, news))
    lines = [side_text("base", bases), side_text("new", news),
             f"regressed = the quantity that decided is more than {threshold_percent:g}% worse in NEW, its "
             f"{100 * CONFIDENCE:.0f}% bootstrap interval lies wholly on the worse side of 1, and the change is beyond "
             f"the run-to-run noise: the spread between the files of each side (two or more runs on a side), else "
             f"the {noise_floor_percent:g}% noise floor",
             f"{'batch':>6}  {'base/s':>10}  {'new/s':>10}  {'thr new/base':>12}  {'p50 ratio':>9}  {'p99 ratio':>9}"
             f"  {'ratio [95% interval]':>26}  {'decided by':<24}  verdict"]
    notes = []
    for result in results:
        verdict = result["regression_verdict"]
        if "pair" not in result and "differences" not in result:
            lines.append(f"{result['batch_size']!s:>6}  {'':>10}  {'':>10}  {'':>12}  {'':>9}  {'':>9}  {'':>26}  "
                         f"{'':<24}  {verdict}")
            continue
        base_mark = "" if result["base_valid"] else "*"
        new_mark = "" if result["new_valid"] else "*"
        start = (f"{result['batch_size']!s:>6}  {result['base_throughput']:>9.2f}{base_mark or ' '}"
                 f"  {result['new_throughput']:>9.2f}{new_mark or ' '}  {result['throughput_ratio']:>11.3f}x")
        if "differences" in result:
            lines.append(f"{start}  {'':>9}  {'':>9}  {'':>26}  {'':<24}  {SHOWN[verdict]}")
            notes.extend(f"   batch {result['batch_size']}: configuration differs: {key}: {base_value} (base) vs "
                         f"{new_value} (new)" for key, base_value, new_value in result["differences"])
            continue
        pair = result["pair"]
        lines.append(f"{start}  {result['p50_ratio']:>8.3f}x  {result['p99_ratio']:>8.3f}x"
                     f"  {interval_text(pair):>26}  {pair.decided_by:<24}  {verdict_text(pair)}")
        if pair.note:
            notes.append(f"   batch {result['batch_size']}: {pair.note}")
        if math.isfinite(pair.between_low) and math.isfinite(pair.low):
            notes.append(f"   batch {result['batch_size']}: the interval shown is the between-run one; the steps' "
                         f"own (bootstrap, pooled over the files) is [{pair.low:.3f}, {pair.high:.3f}]")
    if any(not r.get("base_valid", True) or not r.get("new_valid", True) for r in results):
        lines.append("   * INVALID run: left out of the verdict unless --include-invalid")
    lines.extend(notes)
    lines.append(comparison_conclusion(results))
    return "\n".join(lines)


def comparison_conclusion(results):
    """The last line of a comparison: REGRESSION, different configurations, INVALID pair(s), nothing judged, or
    no regression."""
    def sizes(status):
        return ", ".join(str(r["batch_size"]) for r in results if r["regression_verdict"] == status)

    judged = [r for r in results if r["regression_verdict"] in ("improved", "same", "regressed")]
    if sizes("regressed"):
        return f"REGRESSION at batch size {sizes('regressed')}"
    if sizes("different-configuration"):
        keys = sorted({key for r in results for key, _base, _new in r.get("differences", ())})
        return (f"DIFFERENT CONFIGURATIONS at batch size {sizes('different-configuration')} (not judged: "
                f"{', '.join(keys)} {'differs' if len(keys) == 1 else 'differ'})")
    if sizes("invalid-new"):
        return f"INVALID: new run INVALID at batch size {sizes('invalid-new')} (not judged; --include-invalid to compare)"
    if not judged:
        return "INVALID: no pair could be judged (every pair excluded)"
    return "no regression"
