"""Synthetic result files for the summary tests, written with h5py directly in schema mpirunner/1.

Each run holds generated step times (lognormal, seeded) and the summary mpirunner.stats computes
from them, so the stored attributes and the arrays agree as in a runner's file. Timings are cached
per setting, so hundreds of files cost mostly their writes.
"""
from functools import lru_cache

import h5py
import numpy as np

from mpirunner import SCHEMA, stats

# The stored settings of a default CPU run (root attribute `config`, YAML as the runner writes it): the fields
# of the configuration key that only the settings hold.
SETTINGS = {"model": "resnet18", "weights": None, "precision": "32.32", "compile": "none", "channels_last": False,
            "eight_bit_io": False, "normalization_location": "host", "data": "generated", "device_iterations": 1,
            "replicas": 1, "threads": None, "numa_aware": "yes", "cpus_per_rank": None, "scenario": "offline",
            "target_qps": None, "latency_bound": None, "percentile": 99.0, "iterations": 30, "min_duration": None,
            "seed": 0, "output": "results/x.h5"}


@lru_cache(maxsize=None)
def _timings(batch_size, world_size, steps, slowdown, seed):
    """(step_seconds, step_start, summary attrs, histogram counts, edges) of one run; step = one micro-batch."""
    rng = np.random.default_rng(seed)
    step_s = (2.0 * batch_size + 5.0) / 1e3 * slowdown
    seconds = rng.lognormal(np.log(step_s), 0.05, size=(world_size, steps))
    starts = np.concatenate([np.zeros((world_size, 1)), np.cumsum(seconds, axis=1)[:, :-1]], axis=1)
    summary = stats.summarize(starts, seconds, seconds, batch_size)
    counts, edges = stats.log_histogram(seconds)
    return seconds, starts, summary, counts, edges


def write_result_file(path, batch_sizes=(8,), model="resnet18", precision="32.32", backend="cpu",
                      device_name="Test CPU", world_size=1, slowdown=1.0, invalid_reasons=(), created=
                      "2026-11-29T12:00:00+00:00", git_commit="a" * 40, steps=30, seed=0, schema=SCHEMA,
                      settings=None, run_attrs=None):
    """One results file with a run group per batch size; `invalid_reasons` makes every run INVALID with them.

    settings: a dict stored as the root `config` YAML (SETTINGS and its variations); None: an older file without
    it. run_attrs: extra attributes of every run group (a scenario's, e.g. target_qps).
    """
    with h5py.File(path, "w") as h5:
        if settings is not None:
            import yaml

            h5.attrs["config"] = yaml.safe_dump(dict(settings), sort_keys=True)
        h5.attrs.update({"schema": schema, "mpirunner_version": "0.1.0", "created": created, "argv": "test",
                         "world_size": world_size, "backend": backend, "device_name": device_name,
                         "git_commit": git_commit, "dtype": "float32", "image_size": 32})
        h5.attrs.create("hosts", np.asarray([f"node{rank}" for rank in range(world_size)], dtype=object),
                        dtype=h5py.string_dtype())
        ranks = np.array([(rank, f"node{rank}", 0, "cpu") for rank in range(world_size)],
                         dtype=[("rank", np.int64), ("host", h5py.string_dtype()), ("local_rank", np.int64),
                                ("device", h5py.string_dtype())])
        h5.create_dataset("ranks", data=ranks)
        runs = h5.create_group("runs")
        for batch_size in batch_sizes:
            seconds, starts, summary, counts, edges = _timings(batch_size, world_size, steps, slowdown, seed)
            group = runs.create_group(f"bs{batch_size:05d}")
            attrs = {"batch_size": batch_size, "device_iterations": 1, "local_replicas": 1,
                     "samples_per_step": batch_size, "model": model, "data": "generated", "precision": precision,
                     "dtype": "float32", "image_size": 32, "iterations": steps, "warmup": 1,
                     "compile_seconds_max": 1.5, "host_gap_max": 0.001, "device_busy_min": 0.99,
                     "input_pool_steps": 2, "input_pool_bytes": 2 ** 20, "flops_per_sample": 5.6e8,
                     "achieved_flops": 5.6e8 * summary["throughput"], "valid": not invalid_reasons, **summary,
                     **(run_attrs or {})}
            group.attrs.update(attrs)
            if invalid_reasons:
                group.attrs.create("validity_reason", np.asarray(list(invalid_reasons), dtype=object),
                                   dtype=h5py.string_dtype())
            else:
                group.attrs["validity_reason"] = ""
            for name, data in (("step_seconds", seconds), ("step_start", starts), ("batch_latency", seconds),
                               ("compile_seconds", np.full(world_size, 1.5)), ("histogram/counts", counts),
                               ("histogram/edges", edges)):
                group.create_dataset(name, data=data)
    return path
