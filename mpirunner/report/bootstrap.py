"""Seeded bootstrap of a median ratio (numpy only): the within-run interval of `compare` and trends.

The resampling depends only on the seed and the sizes, so it is drawn as counts once per (seed,
sizes) and kept for the next pair of the same sizes; each resample's median is read from the
counts, exactly np.median of the resampled values.
"""
import functools

import numpy as np

RESAMPLES = 2000
CONFIDENCE = 0.95
CHUNK_ELEMENTS = 2_000_000  # bounds the memory of one block of resamples
CACHED_ELEMENTS = 4_000_000  # resamplings up to this size (8 MB) are kept for the next pair of the same sizes


def resampled_medians(values, rng, resamples=RESAMPLES):
    """Medians of `resamples` bootstrap resamples (with replacement) of values."""
    return _medians(values, _draw_counts(rng, values.size, resamples))


def _draw_counts(rng, size, resamples):
    """The resamples of `size` values as counts, block by block (a generator: one block in memory at a time).

    A block is [size, rows]: how often each value was drawn in each resample. The draws are
    rng.integers in blocks of CHUNK_ELEMENTS, as the plain bootstrap drew them, so the intervals
    are those of np.median over values[picks].
    """
    rows_per_block = max(1, CHUNK_ELEMENTS // max(size, 1))
    done = 0
    while done < resamples:
        count = min(rows_per_block, resamples - done)
        picks = rng.integers(0, size, size=(count, size))
        flat = (picks + size * np.arange(count)[:, None]).ravel()
        yield np.ascontiguousarray(np.bincount(flat, minlength=count * size).reshape(count, size).T,
                                   dtype=np.int16 if size <= np.iinfo(np.int16).max else np.int32)
        done += count


def _medians(values, blocks):
    """The median of each resample, from its counts: exactly np.median of the resampled values, without sorting them.

    In value order, a row's k-th smallest value is the first whose running count exceeds k.
    """
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
    """(median ratio NEW/BASE, interval low, interval high) of per-sample step time, by seeded bootstrap.

    The resampling depends only on the seed and the sizes, so it is drawn once per (seed, sizes)
    and kept for the next pair of the same sizes (a trend's steps); large ones are drawn each time.
    """
    if isinstance(seed, int) and (new_values.size + base_values.size) * resamples <= CACHED_ELEMENTS:
        new_counts, base_counts = _pair_counts(seed, resamples, new_values.size, base_values.size)
        ratios = _medians(new_values, new_counts) / _medians(base_values, base_counts)
    else:  # NEW's medians are all drawn before BASE's, one block at a time
        rng = np.random.default_rng(seed)
        ratios = resampled_medians(new_values, rng, resamples) / resampled_medians(base_values, rng, resamples)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(ratios, [tail, 1.0 - tail])
    return float(np.median(new_values) / np.median(base_values)), float(low), float(high)
