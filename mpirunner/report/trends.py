"""Trends for `mpirunner-report summary --by commit|created`: runs of one configuration in order, each step judged.

A configuration is the run's configuration key (report/configuration.py: every setting that changes
what is measured, batch size included), so an eager run is never trended against an inductor run nor
a server load against an offline run; a field a file lacks (an older file) is unknown and never
splits a trend. Its runs are ordered by creation time; with `--by commit` each commit is one step
(its latest run), commits in the order of those runs, and runs without a commit are left out of the
trend. Each step is judged against the earlier VALID steps (any earlier step with `include_invalid`),
the latest HISTORY_RUNS of them, by compare.judge_groups, the rule of `mpirunner-report compare`:
with two or more earlier steps, beyond the prediction interval of their spread (between-run noise);
with one, beyond the noise floor, as `compare A B`. That rule needs the per-step times, so only the
runs of configurations with two or more steps have their step_seconds read, each run once.
"""
from dataclasses import dataclass, field

from mpirunner.report.configuration import KEY_NAMES, UNKNOWN, compatible, key_value, merged
from mpirunner.report.variation import HISTORY_RUNS, NOISE_FLOOR_PERCENT

CONFIGURATION_KEYS = ("model", "precision", "device_name", "world_size", "batch_size")  # a trend's title
SWEEP_KEYS = CONFIGURATION_KEYS[:-1]  # a sweep's figure: one configuration over its batch sizes (html.py)
BY = ("commit", "created")
# Extra CSV/JSON columns of a trend (name with unit, row key).
TREND_COLUMNS = (("trend", "trend"), ("trend_by", "trend_by"), ("trend_base", "trend_base"),
                 ("trend_decided_by", "trend_decided_by"), ("trend_ratio", "trend_ratio"),
                 ("trend_ratio_ci95_low", "trend_low"), ("trend_ratio_ci95_high", "trend_high"),
                 ("trend_note", "trend_note"), ("trend_reason", "trend_reason"),
                 ("trend_decided_by_noise", "trend_decided_by_noise"), ("trend_earlier_runs", "trend_earlier_runs"),
                 ("trend_between_run_percent", "trend_between_run_percent"),
                 ("trend_between_ci95_low", "trend_between_low"), ("trend_between_ci95_high", "trend_between_high"))


@dataclass
class Trend:
    """One configuration's steps in order: (label, SummaryRun), the label being the commit or the created time.

    configuration: the short key of its title (CONFIGURATION_KEYS); key: the full configuration key;
    detail: what tells it from another trend of the same title ('compile inductor'), '' when none does.
    """

    configuration: tuple
    steps: list = field(default_factory=list)
    key: dict = field(default_factory=dict)
    detail: str = ""


def configuration(row, keys=CONFIGURATION_KEYS):
    """The title fields of a trend (or, keys=SWEEP_KEYS, the key of one sweep figure of the html page)."""
    return tuple(row.get(key, "") for key in keys)


def configuration_text(key):
    """A configuration in words: 'resnet18 32.32, Test CPU, 1 rank(s), batch 8'; a SWEEP_KEYS key without the
    batch. Shared by the printed trends and the html page's trend and sweep titles."""
    model, precision, device, world, *batch = key
    return f"{model} {precision}, {device}, {world} rank(s)" + "".join(f", batch {size}" for size in batch)


def run_key(run):
    """The run's configuration key: read with the summary (summary.read_file(keys=True)), else its title's fields."""
    key = getattr(run, "key", None)
    if key:
        return key
    short = dict(zip(CONFIGURATION_KEYS, (key_value(value) for value in configuration(run.row))))
    return {name: short.get(name, UNKNOWN) for name in KEY_NAMES}


def build_trends(runs, by):
    """The trends of these runs (one per configuration key, in title order), steps ordered as --by says.

    Runs join, oldest first, the first trend whose key agrees with theirs wherever both are known.
    """
    groups = []  # [key, runs]
    for run in sorted(runs, key=lambda run: (str(run.row.get("created", "")), run.row["file"], run.row["run"])):
        key = run_key(run)
        group = next((group for group in groups if compatible(group[0], key)), None)
        if group is None:
            groups.append([key, [run]])
        else:
            group[0] = merged(group[0], key)
            group[1].append(run)
    trends = []
    for key, ordered in groups:
        if by == "commit":
            latest = {}
            for run in ordered:  # oldest first: the last run seen for a commit is its latest
                if run.row.get("git_commit"):
                    latest[run.row["git_commit"]] = run
            steps = sorted(((str(commit)[:12], run) for commit, run in latest.items()),
                           key=lambda step: (str(step[1].row.get("created", "")), step[1].row["file"]))
        else:
            steps = [(str(run.row.get("created", "")), run) for run in ordered]
        trends.append(Trend(configuration=configuration(ordered[0].row), steps=steps, key=key))
    _set_details(trends)
    return sorted(trends, key=lambda trend: (tuple(str(part) for part in trend.configuration), trend.detail))


def _set_details(trends):
    """Trends that share a title: each one's detail names the fields of the key that tell them apart."""
    by_title = {}
    for trend in trends:
        by_title.setdefault(trend.configuration, []).append(trend)
    for same_title in by_title.values():
        if len(same_title) < 2:
            continue
        differing = [name for name in KEY_NAMES
                     if len({trend.key.get(name, UNKNOWN) for trend in same_title}) > 1]
        for trend in same_title:
            trend.detail = ", ".join(f"{name} {trend.key.get(name, UNKNOWN)}" for name in differing)


def trend_title(trend):
    """The trend in words: its configuration_text, and what tells it from a trend of the same title."""
    return configuration_text(trend.configuration) + (f" ({trend.detail})" if trend.detail else "")


def judge_trends(trends, by, threshold_percent, include_invalid=False, load_row=None,
                 noise_floor_percent=NOISE_FLOOR_PERCENT):
    """Mark every step's row with its trend (status, ratio, interval, what decided, base) by compare's rule.

    Each step is judged against the latest HISTORY_RUNS earlier valid steps (compare.judge_groups with
    history=True). load_row(run) -> the run's row with the arrays the rule needs (report/rows.py's
    RunRow); the default reads only step_seconds, and each run once: rows are kept while they are a base.
    """
    from mpirunner.report.compare import judge_groups  # here: a table without trends needs none of it

    load_row = load_row or _load_row
    for trend in trends:
        earlier = []  # [run, its row or None until needed], oldest first
        for index, (label, run) in enumerate(trend.steps):
            run.row["trend_by"] = f"{by} {label}"
            row = None
            if index == 0:
                run.row.update(trend="first", trend_note="no earlier run to compare with")
            elif not earlier:
                run.row.update(trend="no-base", trend_note="no earlier valid run to compare with")
            else:
                for entry in earlier:
                    entry[1] = entry[1] if entry[1] is not None else load_row(entry[0])
                row = load_row(run)
                result = judge_groups([entry[1] for entry in earlier], [row], threshold_percent, noise_floor_percent,
                                      include_invalid=include_invalid, history=True)
                base = earlier[-1][0]
                run.row.update(trend=result.status, trend_base=f"{base.row['file']}:{base.row['run']}",
                               trend_decided_by=result.decided_by, trend_ratio=result.ratio,
                               trend_low=result.low, trend_high=result.high, trend_note=result.note or "",
                               trend_reason=result.reason, trend_decided_by_noise=result.decided_by_noise,
                               trend_earlier_runs=result.base_runs, trend_between_run_percent=result.between_run_percent,
                               trend_between_low=result.between_low, trend_between_high=result.between_high)
            if run.row["valid"] or include_invalid:
                earlier = (earlier + [[run, row]])[-HISTORY_RUNS:]
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
