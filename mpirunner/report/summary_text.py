"""The printed form of `mpirunner-report summary`: one table row per run, the INVALID reasons, skipped files, trends.

A sibling of text.py (which prints single files and comparisons); works on summary.SummaryRun rows.
"""
import math

from mpirunner.report.finite import finite_number
from mpirunner.report.trends import trend_title
from mpirunner.report.variation import HISTORY_RUNS, NOISE_FLOOR_PERCENT


def _number(value, spec):
    if not finite_number(value):
        return "-"
    return f"{value:{spec}}"


def estimate_text(row, key, spec):
    """'x [low, high]' from the stored interval ends, 'x' without them, '-' without the estimate."""
    value = _number(row.get(key), spec)
    low, high = _number(row.get(f"{key}_ci95_low"), spec), _number(row.get(f"{key}_ci95_high"), spec)
    return value if value == "-" or "-" in (low, high) else f"{value} [{low}, {high}]"


def verdict_cell(row):
    """'valid' or 'INVALID' (capitals, so it stands out without colour)."""
    return "valid" if row["valid"] else "INVALID"


def trend_cell(row):
    """The step's trend as a cell: 'REGRESSED 1.203x', 'same 0.998x' (NEW/BASE of the quantity that decided), 'first'."""
    status = row.get("trend", "")
    if not status:
        return ""
    shown = status.upper() if status == "regressed" else status
    ratio = row.get("trend_ratio")
    return f"{shown} {ratio:.3f}x" if isinstance(ratio, float) and math.isfinite(ratio) else shown


# (title, width, cell(row)) of the printed table; the file goes last, it is the widest.
TABLE = (("model", 16, lambda r: str(r["model"])), ("prec", 5, lambda r: str(r["precision"])),
         ("device", 18, lambda r: str(r["device_name"])[:18]), ("ranks", 5, lambda r: str(r["world_size"])),
         ("batch", 5, lambda r: str(r["batch_size"])), ("smp/step", 8, lambda r: str(r["samples_per_step"])),
         ("throughput/s [95% CI]", 30, lambda r: estimate_text(r, "throughput", ".1f")),
         ("p50 ms [95% CI]", 26, lambda r: estimate_text(r, "latency_p50", ".3f")),
         ("p99 ms [95% CI]", 26, lambda r: estimate_text(r, "latency_p99", ".3f")),
         ("util %", 6, lambda r: _number(100 * r["utilization"], ".1f") if isinstance(r.get("utilization"), float)
          and r["utilization"] <= 1.0 else "-"),  # above 100%: a roof measured under load, not a utilisation
         ("verdict", 7, verdict_cell), ("created", 25, lambda r: str(r["created"]) or "-"),
         ("commit", 12, lambda r: str(r["git_commit"])[:12] or "-"), ("hosts", 16, lambda r: str(r["hosts"]) or "-"),
         ("file", 0, lambda r: f"{r['file']}:{r['run']}"))


def summary_table(runs, with_trend=False):
    """The table, one line per run, then one line per INVALID run with its reasons."""
    columns = list(TABLE)
    if with_trend:
        columns.insert(-1, ("trend", 17, trend_cell))
    lines = ["  ".join(f"{title:<{width}}" for title, width, _cell in columns).rstrip()]
    notes = []
    for run in runs:
        lines.append("  ".join(f"{cell(run.row):<{width}}" for _title, width, cell in columns).rstrip())
        if not run.row["valid"]:
            notes.append(f"INVALID {run.row['file']}:{run.row['run']}: "
                         f"{run.row['validity_reason'] or 'no reason stored'}")
    return "\n".join(lines + notes)


def skipped_text(summary):
    """A line per file that could not be read, with its reason, and the count of other files passed over."""
    lines = [f"skipped {path}: {reason}" for path, reason in summary.skipped]
    if summary.other_files:
        lines.append(f"{summary.other_files} other file(s) skipped (not *.h5 or *.hdf5)")
    return "\n".join(lines)


def gate_text(failures):
    """--fail-on-regression: one line per configuration whose latest step failed the gate."""
    lines = []
    for trend in failures:
        label, run = trend.steps[-1]
        row = run.row
        lines.append(f"{row['trend']}: {trend_title(trend)}: {row['file']}:{row['run']} ({label}) "
                     f"{trend_cell(row)}" + "".join(f" ({row[key]})" for key in ("trend_reason", "trend_note")
                                                    if row.get(key)))
    return "\n".join(lines)


def trends_text(trends, threshold_percent, noise_floor_percent=NOISE_FLOOR_PERCENT):
    """Each configuration with two or more steps: its steps in order, each with its trend."""
    lines = []
    for trend in trends:
        if len(trend.steps) < 2:
            continue
        lines.append(f"trend: {trend_title(trend)}")
        for label, run in trend.steps:
            row = run.row
            judged = row.get("trend") in ("improved", "same", "regressed")
            decided = f", {row['trend_decided_by']}" if judged and row.get("trend_decided_by") else ""
            reason = f" ({row['trend_reason']})" if judged and row.get("trend_reason") else ""
            note = f" ({row['trend_note']})" if row.get("trend_note") else ""
            lines.append(f"   {label:<25}  {_number(row.get('throughput'), '.1f'):>10}/s  {verdict_cell(row):<7}  "
                         f"{trend_cell(row)}{decided}{reason}{note}")
    if lines:
        lines.insert(0, f"trends (each step against the earlier valid ones of its configuration, the latest "
                        f"{HISTORY_RUNS}; regressed = slower by more than {threshold_percent:g}% and beyond the "
                        f"spread of the earlier runs (with one earlier run: beyond the {noise_floor_percent:g}% "
                        f"noise floor), as in `mpirunner-report compare`)")
    return "\n".join(lines)
