"""Whether two runs are the same measurement (the configuration key) and how much a measurement moves: the between-run
spread (Welch t interval) and the within-run bootstrap of a median ratio (docs/methodology-and-validity.md)."""
import functools
import math
from dataclasses import dataclass

import numpy as np

from mpirunner.options import NOISE_FLOOR_PERCENT  # noqa: F401 (--noise-floor's default, declared with the flag)
from mpirunner.runfile.names import parse_settings


UNKNOWN = "?"

# (key, sources in order: the run group's attributes, the file's, the stored settings); the first that has it counts.
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
SCALING = ("world_size",)  # what `compare` lets differ, judged on whole-job throughput (trends keep them apart)
# What rows.read_file must read besides its table's attributes for the key (the stored settings it reads on its own).
ROOT_ATTRS = tuple(place[len("root:"):] for _name, places in FIELDS for place in places if place.startswith("root:"))
RUN_ATTRS = tuple(place[len("run:"):] for _name, places in FIELDS for place in places if place.startswith("run:"))


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
    """{key: value text} in FIELDS order from the file's (root) and the run group's attributes."""
    sources = {"run": run or {}, "root": root or {}, "settings": parse_settings((root or {}).get("config", ""))}
    values = {name: [sources[where][field] for where, field in (place.split(":") for place in places)
                     if field in sources[where]] for name, places in FIELDS}
    return {name: key_value(found[0]) if found else UNKNOWN for name, found in values.items()}


def key_differences(base_keys, new_keys, ignore=()):
    """(name, base values, new values) of each field but `ignore` whose known values over both sides are not one."""
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


HISTORY_RUNS = 10  # trends: a new run is judged against at most this many earlier valid runs

# Two-sided 95% Student t quantiles (0.975) by degrees of freedom; between entries, linear in 1/df.
_T975 = ((1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (5, 2.571), (6, 2.447), (7, 2.365), (8, 2.306),
         (9, 2.262), (10, 2.228), (11, 2.201), (12, 2.179), (13, 2.160), (14, 2.145), (15, 2.131), (16, 2.120),
         (17, 2.110), (18, 2.101), (19, 2.093), (20, 2.086), (22, 2.074), (24, 2.064), (26, 2.056), (28, 2.048),
         (30, 2.042), (40, 2.021), (60, 2.000), (120, 1.980), (math.inf, 1.960))


def t_quantile_95(df):
    """The 0.975 quantile of Student's t with `df` (>= 1, may be fractional, Welch's) degrees of freedom."""
    df = df if df >= 1 else 1.0  # NaN too
    for (low_df, low_t), (high_df, high_t) in zip(_T975, _T975[1:]):
        if low_df <= df <= high_df:
            if df == low_df:
                return low_t
            share = (1 / low_df - 1 / df) / (1 / low_df - (0 if math.isinf(high_df) else 1 / high_df))
            return low_t + share * (high_t - low_t)
    return _T975[-1][1]


@dataclass
class Spread:
    """NEW/BASE of the files' geometric means, its 95% between-run interval (NaN with one run per side), in percent."""

    ratio: float
    low: float = float("nan")
    high: float = float("nan")
    percent: float = float("nan")
    base_runs: int = 1
    new_runs: int = 1

    @property
    def measured(self):
        return math.isfinite(self.low) and math.isfinite(self.high)


def between_runs(base_values, new_values):
    """Spread of NEW against BASE from one positive value per file on each side (median s per sample)."""
    base, new = (np.log(np.asarray(values, dtype=np.float64)) for values in (base_values, new_values))
    n_base, n_new = base.size, new.size
    difference = float(new.mean() - base.mean())
    spread = Spread(ratio=math.exp(difference), base_runs=n_base, new_runs=n_new)
    if n_base < 2 and n_new < 2:
        return spread
    # each side's variance; a single file borrows the other side's, and then that one estimate's df is the df
    if n_base > 1 and n_new > 1:
        var_base, var_new = float(base.var(ddof=1)), float(new.var(ddof=1))
    else:
        var_base = var_new = float((base if n_base > 1 else new).var(ddof=1))
    base_term, new_term = var_base / n_base, var_new / n_new
    standard_error = math.sqrt(base_term + new_term)
    if n_base < 2 or n_new < 2:
        df = float(max(n_base, n_new) - 1)
    elif standard_error == 0.0:
        df = float(n_base + n_new - 2)
    else:  # Welch-Satterthwaite
        df = (base_term + new_term) ** 2 / (base_term ** 2 / (n_base - 1) + new_term ** 2 / (n_new - 1))
    half = t_quantile_95(df) * standard_error
    spread.low, spread.high = math.exp(difference - half), math.exp(difference + half)
    spread.percent = 100.0 * (math.exp(half) - 1.0)
    return spread


RESAMPLES = 2000
CONFIDENCE = 0.95
CHUNK_ELEMENTS = 2_000_000  # bounds the memory of one block of resamples
CACHED_ELEMENTS = 4_000_000  # resamplings up to this size (8 MB) are kept for the next pair of the same sizes


def resampled_medians(values, rng, resamples=RESAMPLES):
    """Medians of `resamples` bootstrap resamples (with replacement) of values."""
    return _medians(values, _draw_counts(rng, values.size, resamples))


def _draw_counts(rng, size, resamples):
    """The resamples of `size` values as counts, one [size, rows] block at a time: how often each value was drawn in
    each resample, from rng.integers drawn as the plain bootstrap draws them (the same intervals)."""
    rows_per_block = max(1, CHUNK_ELEMENTS // max(size, 1))
    for done in range(0, resamples, rows_per_block):
        count = min(rows_per_block, resamples - done)
        picks = rng.integers(0, size, size=(count, size))
        flat = (picks + size * np.arange(count)[:, None]).ravel()
        yield np.ascontiguousarray(np.bincount(flat, minlength=count * size).reshape(count, size).T,
                                   dtype=np.int16 if size <= np.iinfo(np.int16).max else np.int32)


def _medians(values, blocks):
    """The median of each resample, exactly np.median of the resampled values, from its counts without sorting: in
    value order, a row's k-th smallest value is the first whose running count exceeds k."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    middle = [(values.size - 1) // 2, values.size // 2]  # the same index twice for an odd count
    medians = []
    for counts in blocks:
        running = np.cumsum(counts[order], axis=0, dtype=counts.dtype)  # a count never exceeds the size
        low, high = ((running <= k).sum(axis=0) for k in middle)
        medians.append((ordered[low] + ordered[high]) / 2 if middle[0] != middle[1] else ordered[low])
    return np.concatenate(medians)


@functools.lru_cache(maxsize=4)  # at most 32 MB
def _pair_counts(seed, resamples, new_size, base_size):
    """The counts of the NEW then the BASE resamples drawn from one seeded rng (they depend on the sizes alone)."""
    rng = np.random.default_rng(seed)
    return list(_draw_counts(rng, new_size, resamples)), list(_draw_counts(rng, base_size, resamples))


def time_ratio_interval(base_values, new_values, seed=0, resamples=RESAMPLES, confidence=CONFIDENCE):
    """(median ratio NEW/BASE, low, high) of per-sample step time by seeded bootstrap (cached per sizes)."""
    if isinstance(seed, int) and (new_values.size + base_values.size) * resamples <= CACHED_ELEMENTS:
        new_counts, base_counts = _pair_counts(seed, resamples, new_values.size, base_values.size)
        ratios = _medians(new_values, new_counts) / _medians(base_values, base_counts)
    else:  # NEW's medians are all drawn before BASE's, one block at a time
        rng = np.random.default_rng(seed)
        ratios = resampled_medians(new_values, rng, resamples) / resampled_medians(base_values, rng, resamples)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(ratios, [tail, 1.0 - tail])
    return float(np.median(new_values) / np.median(base_values)), float(low), float(high)
