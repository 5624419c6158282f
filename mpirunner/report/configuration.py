"""The configuration key of a run: every setting that changes WHAT is measured, read from its file's attributes.

Two runs are the same measurement only when their keys agree: trends (`summary --by`) pair runs by
it and `compare` judges nothing when it differs (exit 7). The key is read from the run group's
attributes, the file's root attributes and the settings the runner stored as YAML (root `config`).
Settings that change how LONG a run measures (--iterations, --min-duration, --until-stable, warm-up,
--max-cv), where it writes, its seed and test-only settings (the MPIRUNNER_FAULT variable, which is
never stored) are not part of it. A file that lacks a field (an older file) has it as UNKNOWN ('?'),
and an unknown value never counts as a difference. Pure: no torch, no mpi4py, no h5py.
"""
import functools
import math

import numpy as np

UNKNOWN = "?"

# (key, sources in order): 'run' = the run group's attributes, 'root' = the file's, 'settings' = the stored
# settings (root `config`). The first source that has the field gives its value.
FIELDS = (
    ("model", ("run:model", "settings:model")),
    ("weights", ("settings:weights",)),
    ("image_size", ("run:image_size", "root:image_size")),
    ("precision", ("run:precision", "settings:precision")),
    ("dtype", ("run:dtype", "root:dtype")),
    ("half_partial", ("root:half_partial_used", "settings:half_partial")),
    ("norm_type", ("settings:norm_type",)),
    ("compile", ("settings:compile",)),
    ("cuda_graphs", ("settings:cuda_graphs",)),
    ("channels_last", ("settings:channels_last",)),
    ("eight_bit_io", ("settings:eight_bit_io",)),
    ("normalization_location", ("root:normalization_location_used", "settings:normalization_location")),
    ("min_latency", ("settings:min_latency",)),
    ("num_io_tiles", ("settings:num_io_tiles",)),
    ("enable_fast_groupnorm", ("settings:enable_fast_groupnorm",)),
    ("data", ("run:data", "settings:data")),
    ("batch_size", ("run:batch_size",)),
    ("device_iterations", ("run:device_iterations", "settings:device_iterations")),
    ("replicas", ("settings:replicas",)),
    ("local_replicas", ("run:local_replicas",)),
    ("world_size", ("root:world_size",)),
    ("threads", ("settings:threads",)),
    ("numa_aware", ("settings:numa_aware",)),
    ("cpus_per_rank", ("settings:cpus_per_rank",)),
    ("backend", ("root:backend",)),
    ("device_name", ("root:device_name",)),
    ("scenario", ("run:scenario", "settings:scenario")),
    ("target_qps", ("run:target_qps", "settings:target_qps")),
    ("latency_bound", ("settings:latency_bound",)),
    ("percentile", ("settings:percentile",)),
    ("query_size", ("settings:query_size",)),
    ("max_batch_wait_ms", ("run:max_batch_wait_ms", "settings:max_batch_wait_ms")),
)
KEY_NAMES = tuple(name for name, _sources in FIELDS)
# The fields `compare` lets differ: a different world size is a scaling question it answers on whole-job
# throughput (trends keep them apart all the same).
SCALING = ("world_size",)
# What summary.read_file must read besides its table's attributes for the key (each read costs ~0.1 ms);
# the stored settings (root `config`) it reads on its own.
ROOT_ATTRS = ("image_size", "dtype", "half_partial_used", "normalization_location_used", "world_size",
              "backend", "device_name")
RUN_ATTRS = ("model", "image_size", "precision", "dtype", "data", "batch_size", "device_iterations",
             "local_replicas", "scenario", "target_qps", "max_batch_wait_ms")


@functools.lru_cache(maxsize=256)
def _settings_of_text(text):
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        settings = yaml.load(text, Loader=loader)
    except yaml.YAMLError:
        return {}
    return settings if isinstance(settings, dict) else {}


def stored_settings(root):
    """The settings the runner stored (root attribute `config`, YAML text) as a dict; {} when absent or unreadable."""
    text = root.get("config", "")
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return _settings_of_text(text) if isinstance(text, str) and text.strip() else {}


def key_value(value):
    """One value of the key as text: numbers without float noise, None as 'none', NaN as unknown."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "none"
    if isinstance(value, float):
        if not math.isfinite(value):
            return UNKNOWN
        return str(int(value)) if value.is_integer() else f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ",".join(key_value(item) for item in value)
    return str(value)


def configuration_key(root, run):
    """{key: value text} in FIELDS order: what this run measured (root: the file's attributes, run: the run group's)."""
    sources = {"run": run or {}, "root": root or {}, "settings": stored_settings(root or {})}
    key = {}
    for name, places in FIELDS:
        key[name] = UNKNOWN
        for place in places:
            where, field = place.split(":")
            if field in sources[where]:
                key[name] = key_value(sources[where][field])
                break
    return key


def key_differences(base_keys, new_keys, ignore=()):
    """(name, base values, new values) for each field whose KNOWN values are not all one; unknowns never differ.

    base_keys, new_keys: lists of keys (one per file of each side); values are joined with '/' when a side mixes.
    ignore: fields not checked (compare: SCALING, which it judges on whole-job throughput).
    """
    differences = []
    for name in (name for name in KEY_NAMES if name not in ignore):
        base = _known(key.get(name, UNKNOWN) for key in base_keys)
        new = _known(key.get(name, UNKNOWN) for key in new_keys)
        if len(set(base) | set(new)) > 1:
            differences.append((name, "/".join(base) or UNKNOWN, "/".join(new) or UNKNOWN))
    return differences


def _known(values):
    return list(dict.fromkeys(value for value in values if value != UNKNOWN))


def compatible(first, second):
    """Whether two keys can be one configuration: every field known in both has one value."""
    return all(first.get(name, UNKNOWN) == second.get(name, UNKNOWN) for name in KEY_NAMES
               if UNKNOWN not in (first.get(name, UNKNOWN), second.get(name, UNKNOWN)))


def merged(first, second):
    """The key with the fields `first` leaves unknown filled in from `second` (a trend's key as its runs add up)."""
    return {name: first.get(name, UNKNOWN) if first.get(name, UNKNOWN) != UNKNOWN else second.get(name, UNKNOWN)
            for name in KEY_NAMES}
