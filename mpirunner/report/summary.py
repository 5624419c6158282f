"""`mpirunner-report summary`: many runs (rows.SummaryRun) at a glance: filters, order, the table, CSV/JSON, trends
(the runs of one configuration key in creation order, or a step per commit; compare.judge_trends judges them)."""
import fnmatch
import math
from dataclasses import dataclass, field

from mpirunner.errors import UsageError
from mpirunner.options import DEFAULT_SORT, SORT_NAMES
from mpirunner.report.rows import COLUMNS, finite_number, number_text, write_rows
from mpirunner.report.variation import HISTORY_RUNS, KEY_NAMES, NOISE_FLOOR_PERCENT, UNKNOWN, compatible, merged
from mpirunner.runfile.names import in_unit

# --sort names (options.SORT_NAMES) -> row keys; '-name' sorts that key in descending order.
SORT_KEYS = {name: {"device": "device_name", "world-size": "world_size", "batch-size": "batch_size",
                    "p50": "latency_p50", "p99": "latency_p99", "commit": "git_commit"}.get(name, name)
             for name in SORT_NAMES}
CONFIGURATION_KEYS = ("model", "precision", "device_name", "world_size", "batch_size")  # a trend's title
SWEEP_KEYS = CONFIGURATION_KEYS[:-1]  # a sweep's figure: one configuration over its batch sizes (html.py)
# Extra CSV/JSON columns of a trend (compare.judge_trends names each row key as its column).
TREND_COLUMNS = tuple((name, name) for name in (
    "trend", "trend_by", "trend_base", "trend_decided_by", "trend_ratio", "trend_ratio_ci95_low",
    "trend_ratio_ci95_high", "trend_note", "trend_reason", "trend_decided_by_noise", "trend_earlier_runs",
    "trend_between_run_percent", "trend_between_ci95_low", "trend_between_ci95_high"))


def select(runs, models=(), devices=(), batch_sizes=(), valid_only=False):
    """The runs that pass every filter: models are globs, devices a backend, a glob or part of the device name."""
    def model_ok(row):
        return not models or any(fnmatch.fnmatch(str(row["model"]).lower(), pattern.lower()) for pattern in models)

    def device_ok(row):
        backend, name = str(row["backend"]).lower(), str(row["device_name"]).lower()
        return not devices or any(pattern.lower() == backend or pattern.lower() in name
                                  or fnmatch.fnmatch(name, pattern.lower()) for pattern in devices)

    return [run for run in runs if model_ok(run.row) and device_ok(run.row)
            and (not batch_sizes or run.row["batch_size"] in batch_sizes)
            and (run.row["valid"] or not valid_only)]


def parse_sort(text):
    """'created,-throughput' -> [('created', False), ('throughput', True)]; UsageError on an unknown key."""
    keys = []
    for part in filter(None, (piece.strip() for piece in str(text).split(","))):
        name, descending = (part[1:], True) if part.startswith("-") else (part, False)
        if name not in SORT_KEYS:
            raise UsageError(f"--sort: unknown key '{name}'; use {', '.join(SORT_KEYS)} "
                             "(a leading '-' sorts descending)")
        keys.append((name, descending))
    return keys


def sort_runs(runs, keys=None):
    """Runs sorted by the (name, descending) keys, then by the default order; missing values last either way."""
    ordered = list(runs)
    for name, descending in reversed(list(keys or []) + [(name, False) for name in DEFAULT_SORT]):
        ordered.sort(key=lambda run: _sortable(run.row.get(SORT_KEYS[name]), descending), reverse=descending)
    return ordered  # stable sorts, least significant key first


def _sortable(value, descending):
    """A sort key: numbers before texts, a missing value last whichever the direction."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return (not descending,)
    if isinstance(value, (bool, int, float)):
        return (descending, 0, float(value), "")
    return (descending, 1, 0.0, str(value))


def write_summary(runs, path, kind, extra_columns=()):
    """Write the rows' COLUMNS and extra (name, key) columns as CSV or JSON; a missing field is None."""
    columns = COLUMNS + tuple(extra_columns)
    write_rows([{column: None if run.row.get(key, "") == "" else in_unit(key, run.row[key]) for column, key in columns}
                for run in runs], path, kind)


def interval_cell(row, key, spec):
    """'x [low, high]' from the stored interval ends, 'x' without them, '-' without the estimate."""
    value = number_text(row.get(key), spec)
    low, high = number_text(row.get(f"{key}_ci95_low"), spec), number_text(row.get(f"{key}_ci95_high"), spec)
    return value if value == "-" or "-" in (low, high) else f"{value} [{low}, {high}]"


def _batch_cell(row, key):
    """A batch latency percentile with its interval: n/a when blanked by the one percentile rule (rows.py)."""
    return "n/a" if row.get(key, "") is None else interval_cell(row, key, ".3f")


def verdict_cell(row):
    """'valid' or 'INVALID' (capitals, so it stands out without colour)."""
    return "valid" if row["valid"] else "INVALID"


def trend_cell(row):
    """The step's trend as a cell: 'REGRESSED 1.203x', 'same 0.998x' (NEW/BASE of what decided), 'first'."""
    status = row.get("trend", "")
    if not status:
        return ""
    shown = status.upper() if status == "regressed" else status
    ratio = row.get("trend_ratio")
    return f"{shown} {ratio:.3f}x" if finite_number(ratio) else shown


# (title, width, cell(row)) of the printed table; the file goes last, it is the widest.
TABLE = (("model", 16, lambda r: str(r["model"])), ("prec", 5, lambda r: str(r["precision"])),
         ("device", 18, lambda r: str(r["device_name"])[:18]), ("ranks", 5, lambda r: str(r["world_size"])),
         ("batch", 5, lambda r: str(r["batch_size"])), ("smp/step", 8, lambda r: str(r["samples_per_step"])),
         ("throughput/s [95% CI]", 30, lambda r: interval_cell(r, "throughput", ".1f")),
         ("p50 ms [95% CI]", 26, lambda r: _batch_cell(r, "latency_p50")),
         ("p99 ms [95% CI]", 26, lambda r: _batch_cell(r, "latency_p99")),
         ("util %", 6, lambda r: number_text(100 * r["utilization"], ".1f") if isinstance(r.get("utilization"), float)
          and r["utilization"] <= 1.0 else "-"),  # above 100%: a roof measured under load, not a utilisation
         ("verdict", 7, verdict_cell), ("created", 25, lambda r: str(r["created"]) or "-"),
         ("commit", 12, lambda r: str(r["git_commit"])[:12] or "-"), ("hosts", 16, lambda r: str(r["hosts"]) or "-"),
         ("file", 0, lambda r: f"{r['file']}:{r['run']}"))


def _query_cell(row, key):
    """A scenario run's query percentile with its interval; n/a when it had too few queries (runfile/shown.py)."""
    if not row.get("scenario"):
        return "-"
    return interval_cell(row, key, ".3f") if finite_number(row.get(key)) else "n/a"


def _bound_cell(row):
    within, bound = row.get("within_bound"), row.get("latency_bound")
    if within in (None, "") or not finite_number(bound):
        return "-"
    return f"{'within' if within else 'OVER'} {bound:g} ms"


def _loads_cell(row):
    loads = [row.get(key) for key in ("target_qps", "offered_qps", "achieved_qps")]
    return " / ".join(number_text(value, ".1f") for value in loads) if any(map(finite_number, loads)) else "-"


# Single-stream and server runs (when the table has any): the loads, query latency, the bound.
SCENARIO_TABLE = (("QPS target/offered/achieved", 27, _loads_cell),
                  ("query p50 ms [95% CI]", 26, lambda r: _query_cell(r, "query_latency_p50")),
                  ("query p99 ms [95% CI]", 26, lambda r: _query_cell(r, "query_latency_p99")),
                  ("bound", 14, _bound_cell))


def table_columns(runs):
    """The table's (title, width, cell) columns, with SCENARIO_TABLE's when any run is a scenario run."""
    if not any(run.row.get("scenario") for run in runs):
        return list(TABLE)
    at = [title for title, _width, _cell in TABLE].index("verdict")
    return list(TABLE[:at]) + list(SCENARIO_TABLE) + list(TABLE[at:])


def summary_table(runs, with_trend=False):
    """The table, one line per run, then one line per INVALID run with its reasons."""
    columns = table_columns(runs)
    if with_trend:
        columns.insert(-1, ("trend", 17, trend_cell))
    lines, notes = ["  ".join(f"{title:<{width}}" for title, width, _cell in columns).rstrip()], []
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
    for trend in (trend for trend in trends if len(trend.steps) >= 2):
        lines.append(f"trend: {trend_title(trend)}")
        for label, run in trend.steps:
            row = run.row
            judged = row.get("trend") in ("improved", "same", "regressed")
            decided = f", {row['trend_decided_by']}" if judged and row.get("trend_decided_by") else ""
            reason = f" ({row['trend_reason']})" if judged and row.get("trend_reason") else ""
            note = f" ({row['trend_note']})" if row.get("trend_note") else ""
            lines.append(f"   {label:<25}  {number_text(row.get('throughput'), '.1f'):>10}/s  {verdict_cell(row):<7}  "
                         f"{trend_cell(row)}{decided}{reason}{note}")
    if lines:
        lines.insert(0, f"trends (each step against the earlier valid ones of its configuration, the latest "
                        f"{HISTORY_RUNS}; regressed = slower by more than {threshold_percent:g}% and beyond the "
                        f"spread of the earlier runs (with one earlier run: beyond the {noise_floor_percent:g}% "
                        f"noise floor), as in `mpirunner-report compare`)")
    return "\n".join(lines)


@dataclass
class Trend:
    """One configuration's steps in order, (the commit or the created time, SummaryRun); detail: what tells it from
    another trend of the same title ('compile inductor')."""

    configuration: tuple
    steps: list = field(default_factory=list)
    key: dict = field(default_factory=dict)
    detail: str = ""


def configuration_text(key):
    """A configuration in words: 'resnet18 32.32, Test CPU, 1 rank(s), batch 8' (a sweep's: no batch)."""
    model, precision, device, world, *batch = key
    return f"{model} {precision}, {device}, {world} rank(s)" + "".join(f", batch {size}" for size in batch)


def build_trends(runs, by):
    """The trends of these runs in title order: each run, oldest first, joins the first trend whose key agrees."""
    groups = []  # [key, runs]
    for run in sorted(runs, key=lambda run: (str(run.row.get("created", "")), run.row["file"], run.row["run"])):
        group = next((group for group in groups if compatible(group[0], run.key)), None)
        if group is None:
            groups.append([run.key, [run]])
        else:
            group[0] = merged(group[0], run.key)
            group[1].append(run)
    trends = []
    for key, ordered in groups:
        if by == "commit":
            # oldest first: the last run seen for a commit is its latest
            latest = {run.row["git_commit"]: run for run in ordered if run.row.get("git_commit")}
            steps = sorted(((str(commit)[:12], run) for commit, run in latest.items()),
                           key=lambda step: (str(step[1].row.get("created", "")), step[1].row["file"]))
        else:
            steps = [(str(run.row.get("created", "")), run) for run in ordered]
        title = tuple(ordered[0].row.get(name, "") for name in CONFIGURATION_KEYS)
        trends.append(Trend(configuration=title, steps=steps, key=key))
    _set_details(trends)
    return sorted(trends, key=lambda trend: (tuple(str(part) for part in trend.configuration), trend.detail))


def _set_details(trends):
    """Trends that share a title: each one's detail names the fields of the key that tell them apart."""
    by_title = {}
    for trend in trends:
        by_title.setdefault(trend.configuration, []).append(trend)
    for same_title in by_title.values():  # a title of one trend: no field differs, no detail
        differing = [name for name in KEY_NAMES
                     if len({trend.key.get(name, UNKNOWN) for trend in same_title}) > 1]
        for trend in same_title:
            trend.detail = ", ".join(f"{name} {trend.key.get(name, UNKNOWN)}" for name in differing)


def trend_title(trend):
    """The trend in words: its configuration_text, and what tells it from a trend of the same title."""
    return configuration_text(trend.configuration) + (f" ({trend.detail})" if trend.detail else "")
