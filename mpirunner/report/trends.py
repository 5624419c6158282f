"""Trends for `mpirunner-report summary --by commit|created`: runs of one configuration in order, each step judged.

A configuration is (model, precision, device name, world size, batch size). Its runs are ordered
by creation time; with `--by commit` each commit is one step (its latest run), commits in the
order of those runs, and runs without a commit are left out of the trend. Each step is compared
with the latest earlier VALID step (any earlier step with `include_invalid`) by
mpirunner.report.compare.compare_runs, the rule `mpirunner-report compare` applies, so a trend
and a compare of the same two files agree. That rule needs the per-step times, so only the
runs of configurations with two or more steps have their step_seconds read, each run once.
"""
from dataclasses import dataclass, field

CONFIGURATION_KEYS = ("model", "precision", "device_name", "world_size", "batch_size")
SWEEP_KEYS = CONFIGURATION_KEYS[:-1]  # a sweep's figure: one configuration over its batch sizes (html.py)
BY = ("commit", "created")
# Extra CSV/JSON columns of a trend (name with unit, row key).
TREND_COLUMNS = (("trend", "trend"), ("trend_by", "trend_by"), ("trend_base", "trend_base"),
                 ("trend_decided_by", "trend_decided_by"), ("trend_ratio", "trend_ratio"),
                 ("trend_ratio_ci95_low", "trend_low"), ("trend_ratio_ci95_high", "trend_high"),
                 ("trend_note", "trend_note"))


@dataclass
class Trend:
    """One configuration's steps in order: (label, SummaryRun), the label being the commit or the created time."""

    configuration: tuple
    steps: list = field(default_factory=list)


def configuration(row, keys=CONFIGURATION_KEYS):
    """The key runs must share to stand in one trend (or, keys=SWEEP_KEYS, one sweep figure of the html page)."""
    return tuple(row.get(key, "") for key in keys)


def configuration_text(key):
    """A configuration in words: 'resnet18 32.32, Test CPU, 1 rank(s), batch 8'; a SWEEP_KEYS key without the
    batch. Shared by the printed trends and the html page's trend and sweep titles."""
    model, precision, device, world, *batch = key
    return f"{model} {precision}, {device}, {world} rank(s)" + "".join(f", batch {size}" for size in batch)


def build_trends(runs, by):
    """The trends of these runs (one per configuration, in configuration order), steps ordered as --by says."""
    groups = {}
    for run in sorted(runs, key=lambda run: (str(run.row.get("created", "")), run.row["file"], run.row["run"])):
        groups.setdefault(configuration(run.row), []).append(run)
    trends = []
    for key in sorted(groups, key=lambda key: tuple(str(part) for part in key)):
        ordered = groups[key]
        if by == "commit":
            latest = {}
            for run in ordered:  # oldest first: the last run seen for a commit is its latest
                if run.row.get("git_commit"):
                    latest[run.row["git_commit"]] = run
            steps = sorted(((str(commit)[:12], run) for commit, run in latest.items()),
                           key=lambda step: (str(step[1].row.get("created", "")), step[1].row["file"]))
        else:
            steps = [(str(run.row.get("created", "")), run) for run in ordered]
        trends.append(Trend(configuration=key, steps=steps))
    return trends


def judge_trends(trends, by, threshold_percent, include_invalid=False, load_row=None):
    """Mark every step's row with its trend (status, ratio, interval, what decided, base) by compare's rule.

    load_row(run) -> the run's row with the arrays the rule needs (report/rows.py's RunRow); the
    default reads only step_seconds, and each run once: a step's row is kept while it is the base.
    """
    from mpirunner.report.compare import compare_runs  # here: a table without trends needs none of it

    load_row = load_row or _load_row
    for trend in trends:
        base = base_row = None
        for index, (label, run) in enumerate(trend.steps):
            run.row["trend_by"] = f"{by} {label}"
            row = None
            if index == 0:
                run.row.update(trend="first", trend_note="no earlier run to compare with")
            elif base is None:
                run.row.update(trend="no-base", trend_note="no earlier valid run to compare with")
            else:
                base_row = base_row if base_row is not None else load_row(base)
                row = load_row(run)
                result = compare_runs(base_row, row, threshold_percent, include_invalid=include_invalid)
                run.row.update(trend=result.status, trend_base=f"{base.row['file']}:{base.row['run']}",
                               trend_decided_by=result.decided_by, trend_ratio=result.ratio,
                               trend_low=result.low, trend_high=result.high, trend_note=result.note or "")
            if run.row["valid"] or include_invalid:
                base, base_row = run, row
    return trends


GATE_STATUSES = ("regressed", "invalid-new")  # a latest step that fails --fail-on-regression


def latest_failures(trends):
    """The trends whose LATEST step regressed, or is an INVALID run the rule would not judge (as compare exits
    1 and 6 on such a pair): the gate of `summary --fail-on-regression`. Earlier steps are history."""
    return [trend for trend in trends
            if len(trend.steps) > 1 and trend.steps[-1][1].row.get("trend") in GATE_STATUSES]


def _load_row(run):
    """The row compare_runs judges: the table's row (validity, world size, samples per step) and step_seconds.

    The same values rows.summary_row gives those keys, read without the file's other arrays and attributes.
    """
    from mpirunner.report.rows import RunRow
    from mpirunner.report.summary import read_step_seconds

    row = RunRow(run.row)
    row.arrays = {"step_seconds": read_step_seconds(run.row["file"], run.row["run"])}
    return row
