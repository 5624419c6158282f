"""ResNet-50 float16 on one GPU: eager vs CUDA graphs vs torch.compile, each batch size checked against float32.

Uses the runner's own pieces in one process (CudaBackend, the generated-data source, bench.measure), so
each mode compiles once per batch size, and the first call of every step (compile, capture, autotune)
is checked against a float32 reference (TF32 off) on the same input before the step is timed.
The table is written into RESULTS.md between gpu_check markers after every mode, so a run cut short
still leaves what it measured. Called by gpu_check.sh:

    python benchmarks/gpu_modes.py --batch-sizes 1,32,128,256 --iterations 30 --results benchmarks/RESULTS.md
"""
import argparse
import gc
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MODES = {"eager": {}, "cuda-graphs": {"cuda_graphs": True}, "compile": {"compile": "inductor"}}
BEGIN, END = "<!-- gpu_check:begin -->", "<!-- gpu_check:end -->"
MAX_RELATIVE_ERROR = 1e-2  # max |fp16 - fp32| / max |fp32| over the batch's logits
MIN_TOP1_AGREEMENT = 0.99


def compare(outputs, reference):
    """(max abs error / max |reference|, top-1 agreement) of one batch's logits."""
    outputs, reference = outputs.float(), reference.float()
    relative = float((outputs - reference).abs().max() / reference.abs().max().clamp_min(1e-12))
    agreement = float((outputs.argmax(1) == reference.argmax(1)).float().mean())
    return relative, agreement


def float32_references(model_name, batch_sizes, image_size, seed):
    """Inputs (float32, host) and float32 logits of each batch size, computed on the GPU with TF32 off."""
    from mpirunner.models.assembly import build_reference_model
    from mpirunner.config import resolve_config

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    config = resolve_config({"model": model_name, "device": "cuda", "precision": "32.32", "seed": seed})
    model = build_reference_model(config).cuda()  # the same weights as the benchmarked model, in float32
    inputs, references = {}, {}
    with torch.inference_mode():
        for batch in batch_sizes:
            inputs[batch] = torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(batch))
            references[batch] = model(inputs[batch].cuda()).float().cpu()
    del model
    torch.cuda.empty_cache()
    return inputs, references


def measure_mode(mode, args, inputs, references, world, on_row, metadata):
    from mpirunner.models.assembly import build_benchmark_model
    from mpirunner.backends.cuda import CudaBackend
    from mpirunner.bench import measure
    from mpirunner.config import resolve_config
    from mpirunner.data import make_input_source, step_shape

    config = resolve_config({"model": args.model, "device": "cuda", "precision": "16.16", "channels_last": True,
                             "batch_size": ",".join(map(str, args.batch_sizes)), "iterations": args.iterations,
                             "warmup_iterations": args.warmup, "seed": args.seed, **MODES[mode]})
    backend = CudaBackend(config, world)
    model = build_benchmark_model(config, backend.half_dtype())
    backend.prepare(model.module, model.image_size)
    metadata.update(backend.metadata())
    for batch in args.batch_sizes:
        check_input = inputs[batch].to(model.input_dtype)
        step = backend.make_step(batch, check_input)
        start = time.perf_counter()
        outputs, _ = step(check_input)  # the first call: compile / capture / cuDNN autotune, on its own input
        first_call_seconds = time.perf_counter() - start
        relative, agreement = compare(outputs, references[batch])
        source = make_input_source(config, backend, step_shape(batch, 1, model.image_size), model.input_dtype, 0)
        timings = measure(step, source, args.iterations, args.warmup, lambda: None)
        span = float(np.max(timings.step_start + timings.step_seconds) - np.min(timings.step_start))
        on_row({
            "batch": batch, "mode": mode, "throughput": batch * len(timings.step_seconds) / span,
            "step_p50_ms": 1e3 * float(np.median(timings.step_seconds)),
            "latency_p50_ms": 1e3 * float(np.median(timings.batch_latency)),
            "first_call_s": first_call_seconds,
            "peak_gib": backend.peak_memory_allocated() / 2**30,
            "relative_error": relative, "top1_agreement": agreement,
            "check": "ok" if relative <= MAX_RELATIVE_ERROR and agreement >= MIN_TOP1_AGREEMENT else "FAIL",
        })
        del step, source
    del backend, model
    gc.collect()
    torch.cuda.empty_cache()


def table(rows, metadata, args, failures):
    eager = {row["batch"]: row["throughput"] for row in rows if row["mode"] == "eager"}
    lines = [
        BEGIN,
        f"## CUDA backend: {args.model} float16, eager vs CUDA graphs vs torch.compile (benchmarks/gpu_check.sh)",
        "",
        f"GPU: **{metadata.get('device_name', '?')}** ({metadata.get('gpu_total_memory_bytes', 0) / 2**30:.0f} GiB), "
        f"driver {metadata.get('nvidia_driver_version') or '?'}, CUDA runtime {metadata.get('cuda_runtime_version')}, "
        f"cuDNN {metadata.get('cudnn_version')}, torch {torch.__version__}; measured "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        f"One rank, `--data generated` (IO overlap on), channels_last, {args.iterations} timed steps after "
        f"{args.warmup} warm-up steps; first call = compile / graph capture / cuDNN autotune, timed alone. "
        f"Check: the first call's outputs vs float32 (TF32 off) on the same input, ok when max abs error "
        f"<= {MAX_RELATIVE_ERROR:g} x max |fp32 logit| and top-1 agreement >= {MIN_TOP1_AGREEMENT:g}.",
        f"Command: `bash benchmarks/gpu_check.sh` (this table: `python benchmarks/gpu_modes.py --model {args.model} "
        f"--batch-sizes {','.join(map(str, args.batch_sizes))} --iterations {args.iterations} --warmup {args.warmup}`).",
        "",
        "| batch | mode | img/s | vs eager | step p50 ms | batch latency p50 ms | first call s | peak GiB "
        "| max rel err | top-1 agree | check |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in sorted(rows, key=lambda r: (r["batch"], list(MODES).index(r["mode"]))):
        ratio = row["throughput"] / eager[row["batch"]] if row["batch"] in eager else float("nan")
        lines.append(f"| {row['batch']} | {row['mode']} | {row['throughput']:.1f} | {ratio:.2f} | "
                     f"{row['step_p50_ms']:.3f} | {row['latency_p50_ms']:.3f} | {row['first_call_s']:.1f} | "
                     f"{row['peak_gib']:.2f} | {row['relative_error']:.1e} | {row['top1_agreement']:.3f} | {row['check']} |")
    for mode, error in failures.items():
        lines.append(f"\n{mode}: failed: `{error}`")
    lines.append(END)
    return "\n".join(lines) + "\n"


def write_section(path, section):
    """Replace the text between the gpu_check markers (or append it), leaving the rest of the file alone."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        text = before + section.rstrip("\n") + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch-sizes", default="1,32,128,256", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", default=",".join(MODES), type=lambda s: s.split(","))
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "RESULTS.md"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("gpu_modes.py: no CUDA GPU visible (torch.cuda.is_available() is False)")

    from mpirunner.mpi.world import init_world

    world = init_world()
    inputs, references = float32_references(args.model, args.batch_sizes, 224, args.seed)
    rows, failures, metadata = [], {}, {}

    def on_row(row):
        rows.append(row)
        print(f"{row['mode']:12s} batch {row['batch']:4d}: {row['throughput']:9.1f} img/s  step p50 "
              f"{row['step_p50_ms']:8.3f} ms  first call {row['first_call_s']:6.1f} s  rel err "
              f"{row['relative_error']:.1e}  top-1 {row['top1_agreement']:.3f}  {row['check']}", flush=True)
        write_section(args.results, table(rows, metadata, args, failures))

    for mode in args.modes:
        try:
            measure_mode(mode, args, inputs, references, world, on_row, metadata)
        except Exception as error:  # one broken mode must not hide the others' numbers
            failures[mode] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            print(f"{mode}: failed: {failures[mode]}", file=sys.stderr, flush=True)
            gc.collect()
            torch.cuda.empty_cache()
        write_section(args.results, table(rows, metadata, args, failures))
    bad = [row for row in rows if row["check"] != "ok"]
    return 1 if failures or bad else 0


if __name__ == "__main__":
    sys.exit(main())
