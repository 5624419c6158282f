"""The LoadGen side of loadgen_side_by_side.py: one MLPerf LoadGen test of resnet18 in this process.

    python benchmarks/loadgen_sut.py '{"kind": "server", "qps": 100, "duration": 10, "out": "x.json", ...}'

kind: single-stream, server (PerformanceOnly) or peak (Server, FindPeakPerformance from qps). The SUT runs
the model on LoadGen's issuing thread (sut "inline") or on a worker thread fed by a queue (sut "worker").
Writes to `out`: LoadGen's detail-log values and messages, each test point's per-sample scheduled time and
latency from LoadGen's trace, and the SUT's own marks (issue_queries called, model start, model end; ns).
"""
import json
import queue
import sys
import threading
import time
from pathlib import Path

import numpy as np

POOL_SAMPLES = 64
WARMUP_QUERIES = 30


def build_model(image_size, seed):
    """resnet18 with seeded random weights, eval, one thread; a pool of batch-1 inputs."""
    import torch
    import torchvision

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = torchvision.models.resnet18().eval()
    pool = [torch.randn(1, 3, image_size, image_size) for _ in range(POOL_SAMPLES)]
    with torch.inference_mode():
        for index in range(WARMUP_QUERIES):
            model(pool[index % POOL_SAMPLES])
    return model, pool


def loadgen_child(spec):
    """Run one LoadGen test as `spec` says; write what it measured (JSON) to spec['out']."""
    import mlperf_loadgen as lg
    import torch

    model, pool = build_model(spec["image_size"], spec["seed"])
    marks = {"call": [], "start": [], "end": []}  # perf_counter_ns of every sample, in issue order

    def serve(sample, called):
        start = time.perf_counter_ns()
        with torch.inference_mode():
            model(pool[sample.index])
        end = time.perf_counter_ns()
        lg.QuerySamplesComplete([lg.QuerySampleResponse(sample.id, 0, 0)])
        marks["call"].append(called)
        marks["start"].append(start)
        marks["end"].append(end)

    work = queue.Queue()

    def worker_loop():
        torch.set_num_threads(1)  # the OpenMP thread count is per thread: a new thread would use every core
        while True:
            item = work.get()
            if item is None:
                return
            serve(*item)

    def issue_inline(samples):
        called = time.perf_counter_ns()
        for sample in samples:
            serve(sample, called)

    def issue_to_worker(samples):
        called = time.perf_counter_ns()
        for sample in samples:
            work.put((sample, called))

    worker = None
    if spec["sut"] == "worker":
        worker = threading.Thread(target=worker_loop, daemon=True)
        worker.start()
    sut = lg.ConstructSUT(issue_to_worker if worker else issue_inline, lambda: None)
    qsl = lg.ConstructQSL(POOL_SAMPLES, POOL_SAMPLES, lambda indices: None, lambda indices: None)
    settings = lg.TestSettings()
    settings.min_duration_ms = int(spec["duration"] * 1000)
    settings.min_query_count = int(spec["min_queries"])
    if spec["kind"] == "single-stream":
        settings.scenario = lg.TestScenario.SingleStream
        settings.mode = lg.TestMode.PerformanceOnly
        settings.single_stream_expected_latency_ns = int(spec["expected_ms"] * 1e6)
    else:
        settings.scenario = lg.TestScenario.Server
        settings.server_target_qps = float(spec["qps"])
        settings.server_target_latency_ns = int(spec["bound_ms"] * 1e6)
        settings.server_target_latency_percentile = 0.99
        settings.schedule_rng_seed = int(spec.get("schedule_seed", 0))
        settings.mode = lg.TestMode.PerformanceOnly
        if spec["kind"] == "peak":
            settings.mode = lg.TestMode.FindPeakPerformance
            settings.server_find_peak_qps_decimals_of_precision = int(spec["peak_decimals"])
    logs = Path(spec["out"]).parent / "loadgen_logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_settings = lg.LogSettings()
    log_settings.log_output.outdir = str(logs)
    log_settings.log_output.copy_summary_to_stdout = False
    log_settings.enable_trace = True  # LoadGen's default; the per-sample latencies come from it
    lg.StartTestWithLogSettings(sut, qsl, settings, log_settings)
    if worker:
        work.put(None)
        worker.join()
    lg.DestroyQSL(qsl)
    lg.DestroySUT(sut)
    detail = read_detail(logs / "mlperf_log_detail.txt")
    points = read_trace(logs / "mlperf_log_trace.json")
    Path(spec["out"]).write_text(json.dumps({"detail": detail, "points": points, "marks": marks}))


def read_detail(path):
    """LoadGen's detail log: the last value of each key, and every generic/error message in order."""
    values, messages = {}, []
    for line in Path(path).read_text().splitlines():
        if not line.startswith(":::MLLOG"):
            continue
        entry = json.loads(line[len(":::MLLOG"):])
        if entry["key"] in ("generic_message", "error_runtime", "warning_generic_message"):
            messages.append(f"{entry['key']}: {entry['value']}")
        values[entry["key"]] = entry["value"]
    return {"values": values, "messages": messages}


def read_trace(path):
    """Per test point (one starts at each GenerateQueries): each sample's scheduled time (us), latency (ns)."""
    starts, samples = [], []
    with open(path) as trace:
        for line in trace:
            if '"name":"GenerateQueries"' in line:
                starts.append(json.loads(line.rstrip(",\n"))["ts"])
            elif '"name":"Sample"' in line and '"ph":"b"' in line:
                event = json.loads(line.rstrip(",\n"))
                samples.append((event["args"]["sample_seq"], event["ts"], event["args"]["complete_ns"]))
    points = [{"scheduled_us": [], "latency_ns": []} for _ in starts]
    for _, scheduled_us, complete_ns in sorted(samples):
        point = points[max(0, int(np.searchsorted(starts, scheduled_us, side="right")) - 1)]
        point["scheduled_us"].append(scheduled_us)
        point["latency_ns"].append(complete_ns)
    return [point for point in points if point["latency_ns"]]


if __name__ == "__main__":
    loadgen_child(json.loads(sys.argv[1]))
