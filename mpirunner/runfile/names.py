"""The only place that knows a run's attribute names: which typed field each one fills (run.py), and their
unit-named twins (docs/hdf5-schema.md: `latency_p50` -> `latency_p50_ms`, ratios as percent). An attribute
FIELDS does not name is kept verbatim (`Run.extra` or `Run.device`): a run read and written back stores the same.
"""
import functools
from dataclasses import fields, is_dataclass
from operator import attrgetter

import numpy as np

from mpirunner.runfile.parts import Accuracy, Compute, Intervals, RunPoint, ScenarioIntervals, ScenarioSummary, Summary

_LATENCY_STATS = ("mean", "min", "p50", "p90", "p95", "p99", "p99.9", "max", "std")
_INTERVALS = ("_ci95", "_ci95_low", "_ci95_high")

# old name -> (unit suffix, factor from the stored value to the unit)
UNITS = {
    **{f"latency_{stat}": ("ms", 1.0) for stat in _LATENCY_STATS},
    **{f"latency_{q}{end}": ("ms", 1.0) for q in ("p50", "p99") for end in _INTERVALS},
    **{f"throughput{end}": ("samples_per_s", 1.0) for end in ("", "_sum", "_reference", *_INTERVALS)},
    **{name: ("percent", 100.0) for name in ("latency_cv", "step_cv", "step_cv_rank_max", "host_gap_max",
                                             "device_busy_min", "utilization", "utilization_per_host",
                                             "roof_utilization", "accuracy_top1", "accuracy_top5",
                                             "padding_share", "share_over_bound", "keep_up")},
    **{name: ("flop_per_s", 1.0) for name in ("achieved_flops", "peak_flops", "roof_flops")},
    "peak_memory_bandwidth": ("bytes_per_s", 1.0),
    **{f"query_latency_{stat}{end}": ("ms", 1.0) for stat in ("mean", "p50", "p90", "p99")
       for end in ("", *_INTERVALS)},
    **{name: ("ms", 1.0) for name in ("query_wait_mean", "latency_bound", "bound_latency", "bound_latency_upper")},
    **{name: ("qps", 1.0) for name in ("target_qps", "offered_qps")},
}
# Twins not named `<name>_<unit>`: the load a scenario point asked for and the load it was offered (docs/scenarios.md).
NAMED_TWINS = {"target_qps": "offered_qps_target", "offered_qps": "offered_qps_scheduled"}
# Older names that repeat another attribute: left out of exports (the twin of what they repeat is there).
ALIASES = {"cv": "step_cv", "std": "latency_std"}


def unit_name(name):
    """The unit-carrying name of an attribute (itself when it already carries its unit)."""
    if name in NAMED_TWINS:
        return NAMED_TWINS[name]
    return f"{name}_{UNITS[name][0]}" if name in UNITS else name


TWINS = {unit_name(name): name for name in UNITS}


def in_unit(name, value):
    """`value` of attribute `name` as its unit-named twin holds it (fractions x 100); non-numbers unchanged."""
    factor = UNITS[name][1] if name in UNITS else 1.0
    if factor == 1.0 or isinstance(value, (bool, np.bool_, str, bytes)) or value is None:
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        return [float(item) * factor for item in np.asarray(value, dtype=np.float64).ravel()]
    return float(value) * factor if isinstance(value, (int, float, np.number)) else value


def unit_twins(attrs):
    """The unit-named twins of the attributes in `attrs` that lack a unit (what the writer adds to a run group)."""
    return {unit_name(name): in_unit(name, value) for name, value in attrs.items() if name in UNITS}


def exported(row):
    """A CSV/JSON row with unit names only: each unit-less key replaced in place by its twin, aliases and stored
    twins of recomputed values left out."""
    own = {unit_name(name) for name in row if name in UNITS}
    return {unit_name(name): in_unit(name, value) for name, value in row.items()
            if name not in ALIASES and (name not in own or name in UNITS)}


def value_of(attrs, name, default=None):
    """Attribute `name` (an old, unit-less name) from a file of either kind: itself, else its twin converted back."""
    if name in attrs:
        return attrs[name]
    twin = unit_name(name)
    if twin in attrs and name in UNITS:
        value, factor = attrs[twin], UNITS[name][1]
        return value / factor if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    return default


def _intervals(part, path):
    """(attribute, path) of each 95% interval of a part's `intervals` (`<name>_ci95`: its half-width)."""
    return [(item.name + end, f"{path}.{item.name}.{side}") for item in fields(part)
            for end, side in zip(_INTERVALS, ("half_width", "low", "high"))]


def _own_fields(part, path, prefix=""):
    """(attribute, path) of a part's own fields (parts.py), each stored under its field's name (with `prefix`)."""
    return [(prefix + item.name, f"{path}.{item.name}") for item in fields(part) if not is_dataclass(item.type)]


POINT = [pair for pair in _own_fields(RunPoint, "point") if pair[0] != "input_pool_limit_bytes"]  # stored as input's
FIELDS = [
    *POINT,
    ("status", "status"), ("failure_reason", "failure_reason"),
    ("valid", "verdict.valid"), ("validity_reason", "verdict.reasons"),
    ("input_pool_steps", "input.pool_steps"), ("input_pool_bytes", "input.pool_bytes"),
    ("input_pool_limit_bytes", "input.pool_limit_bytes"), ("host_gap_max", "input.host_gap_max"),
    ("device_busy_min", "input.device_busy_min"),
    *_own_fields(Summary, "summary"),
    *[(f"latency_{stat}", f"summary.latency.{stat.replace('.', '_')}") for stat in (*_LATENCY_STATS, "cv", "count")],
    *_intervals(Intervals, "summary.intervals"),
    *_own_fields(Compute, "compute"),
    *_own_fields(ScenarioSummary, "scenario"),
    *_intervals(ScenarioIntervals, "scenario.intervals"),
    *_own_fields(Accuracy, "accuracy", "accuracy_"),
]
PATHS = dict(FIELDS)
# A backend's run report (backends' RunReport.attrs) and its reference-harness figures: Run.device.
DEVICE_NAMES = frozenset({"cuda_graphs", "io_overlap", "output_lag_steps", "batch_latency_source",
                          "latency_meaningful", "latency_note", "first_call_compiles", "visible_devices"})
DEVICE_PREFIXES = ("gpu_", "ipu_", "latency_reference", "throughput_reference_")


def plain(value):
    """An attribute as the file gives it back, as plain Python (numeric arrays stay arrays)."""
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode()
    if isinstance(value, np.ndarray) and value.dtype == object:
        return [plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def split_attrs(attrs):
    """A run group's attributes -> (nested {part: {field: value}} of the known names, device attrs, other attrs,
    whether the unit-named twins were stored); run_attrs recomputes the twins."""
    nested, device, extra = {}, {}, {}
    twins = any(name in attrs for name in TWINS)
    for name, value in attrs.items():
        if name in TWINS and TWINS[name] in attrs:
            continue  # recomputed from its unit-less name
        path = PATHS.get(name)
        if path is None:
            (device if name in DEVICE_NAMES or name.startswith(DEVICE_PREFIXES) else extra)[name] = value
            continue
        node = nested
        *parts, leaf = path.split(".")
        for part in parts:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested, device, extra, twins


def run_attrs(run):
    """The run group's attributes exactly as stored: known fields (None: not stored), the device report, every
    other attribute verbatim, then the unit-named twins when the run carries them."""
    attrs = {}
    for name, path in FIELDS:
        if path.startswith("verdict.") and not run.verdict.stored:
            continue
        try:
            value = attrgetter(path)(run)
        except AttributeError:  # a part the run does not have (None)
            continue
        if value is not None:
            attrs[name] = list(value) if isinstance(value, tuple) else value
    attrs.update(run.device)
    attrs.update(run.extra)
    if run.twins:
        attrs.update(unit_twins(attrs))
    return attrs


# Root attributes that are plain fields of a Job (`config`, `hosts`, `*_version` and `resumed_*` are grouped).
ROOT_FIELDS = ("schema", "created", "argv", "config_name", "config_file_text", "world_size", "backend",
               "device_name", "dtype", "image_size", "launcher", "slurm_job_id", "git_commit", "gpu_total_memory_bytes")
RANK_FIELDS = ("rank", "host", "local_rank", "numa_node", "cpus", "device", "threads")


def stored_text(value):
    """A root attribute as the file gives it back: a dict as its YAML text, None as '', a str subclass as str."""
    if value is None:
        return ""
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        import yaml

        return yaml.safe_dump(value, sort_keys=True)
    return plain(value)


@functools.lru_cache(maxsize=256)
def parse_settings(text):
    """The stored settings (root `config`, YAML text) as a dict; {} when absent or unreadable."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str) or not text.strip():
        return {}
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        settings = yaml.load(text, Loader=loader)
    except yaml.YAMLError:
        return {}
    return settings if isinstance(settings, dict) else {}
