"""One unit convention: every stored or exported number whose name lacks its unit gets a twin that carries it.

Older attribute names (`throughput`, `latency_p50`, `step_cv` as a fraction, ...) stay in every
mpirunner/1 file, so readers written for them keep working; results.py adds the unit-named twin
next to each (`throughput_samples_per_s`, `latency_p50_ms`, `step_cv_percent`), and the report's
CSV/JSON use the twin names only. Ratios are percent under a unit name, never fractions.
The unit-named twins are the canonical names from here on: a future schema (mpirunner/2) may drop
the old names, and readers that look a value up with `value_of` read either kind of file.
"""
import numpy as np

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
    **{name: ("ms", 1.0) for name in ("query_wait_mean", "latency_bound", "bound_latency")},
}
# Older names that repeat another attribute: left out of exports (the twin of what they repeat is there).
ALIASES = {"cv": "step_cv", "std": "latency_std"}


def unit_name(name):
    """The unit-carrying name of an attribute (itself when it already carries its unit)."""
    return f"{name}_{UNITS[name][0]}" if name in UNITS else name


def in_unit(name, value):
    """`value` of attribute `name` as its unit-named twin holds it (fractions x 100); non-numbers unchanged."""
    factor = UNITS[name][1] if name in UNITS else 1.0
    if factor == 1.0 or isinstance(value, (bool, np.bool_, str, bytes)) or value is None:
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        return [float(item) * factor for item in np.asarray(value, dtype=np.float64).ravel()]
    return float(value) * factor if isinstance(value, (int, float, np.number)) else value


def unit_twins(attrs):
    """The unit-named twins of the attributes in `attrs` that lack a unit (what results.py adds to a run group)."""
    return {unit_name(name): in_unit(name, value) for name, value in attrs.items() if name in UNITS}


def exported(row):
    """A CSV/JSON row with unit names only: each unit-less key replaced in place by its twin (same order),
    aliases and stored twins that the row's own recomputed value replaces left out."""
    own = {unit_name(name) for name in row if name in UNITS}
    out = {}
    for name, value in row.items():
        if name in ALIASES or (name in own and name not in UNITS):
            continue
        out[unit_name(name)] = in_unit(name, value)
    return out


def value_of(attrs, name, default=None):
    """Attribute `name` (an old, unit-less name) from a file of either kind: the old name, else its twin converted back."""
    if name in attrs:
        return attrs[name]
    twin = unit_name(name)
    if twin in attrs and name in UNITS:
        value = attrs[twin]
        factor = UNITS[name][1]
        return value / factor if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    return default
