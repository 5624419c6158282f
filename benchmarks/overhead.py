"""Runner overhead: `python -m mpirunner` vs a bare PyTorch loop on the same model settings.

Both run in fresh single processes, interleaved (runner, bare, bare, runner, ...), 5 repetitions;
the ratio reported is the median of runner / bare. Target: >= 0.98 (throughput), <= 1.02 (p50).

    python benchmarks/overhead.py --config resnet50-cpu --iterations 30 --repetitions 5
    python benchmarks/overhead.py --config resnet50-gpu --device cuda --batch-size 1 --metric p50
    python benchmarks/overhead.py --config resnet50-gpu --device cuda --batch-size 256

--against ENV=VALUE compares the runner with itself instead: as it is (A) and with ENV=VALUE (B), both under
mpiexec -n --ranks, alternated; e.g. the liveness heartbeat on vs off:

    python benchmarks/overhead.py --config resnet50-cpu --ranks 2 --against MPIRUNNER_LIVENESS_SECONDS=0

On CUDA the bare loop keeps the input on the GPU (as the runner's generated data does), captures a
CUDA graph when the config asks for one, and synchronises after every step, as the runner does.
"""
import argparse
import statistics
import subprocess
import sys
import time

from common import REPO, only_run, run_runner


def time_steps(step, iterations, warmup, synchronize=lambda: None):
    """Seconds of each of `iterations` timed calls of step() after warmup + 1 untimed ones, each ended by synchronize()."""
    for _ in range(warmup + 1):
        step()
    synchronize()
    seconds = []
    for _ in range(iterations):
        start = time.perf_counter()
        step()
        synchronize()
        seconds.append(time.perf_counter() - start)
    return seconds


def bare_loop(config_name, iterations, warmup, batch=None, device="cpu"):
    """The loop a user would write by hand: same model, dtype, layout, threads, batch and step count.

    Returns (throughput samples/s, p50 step latency ms)."""
    import torch
    import torchvision

    from mpirunner.config import resolve_config
    from mpirunner.models.normalization import WithInputNormalization
    from mpirunner.models.registry import default_resolution, torchvision_name

    config = resolve_config({"config": config_name})
    batch = batch or config.batch_sizes[0]
    size = config.image_size or default_resolution(config.model)
    half = torch.float16 if device == "cuda" else torch.bfloat16
    dtype = half if config.precision == "16.16" else torch.float32
    layout = torch.channels_last if config.channels_last else torch.contiguous_format
    torch.manual_seed(0)
    model = torchvision.models.get_model(torchvision_name(config.model), weights=None)
    if config.eight_bit_io:
        model = WithInputNormalization(model)
    model = model.to(device=device, dtype=dtype).to(memory_format=layout).eval()
    if config.compile == "inductor":
        import torch._inductor.config

        torch._inductor.config.freezing = True
        model = torch.compile(model, backend="inductor", dynamic=False)
    if config.eight_bit_io:
        images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    else:
        images = torch.randn(batch, 3, size, size).to(dtype)
    images = images.to(device).contiguous(memory_format=layout)
    synchronize = (lambda: torch.cuda.synchronize()) if device == "cuda" else (lambda: None)
    with torch.inference_mode():
        step = lambda: model(images)  # noqa: E731
        if device == "cuda" and getattr(config, "cuda_graphs", False):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm on a side stream before capture, as PyTorch's docs ask
                for _ in range(3):
                    model(images)
            torch.cuda.current_stream().wait_stream(side)
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                model(images)
            step = graph.replay
        seconds = time_steps(step, iterations, warmup, synchronize)
    return batch * iterations / sum(seconds), 1e3 * statistics.median(seconds)


def runner_numbers(config_name, iterations, warmup, batch, device, ranks=None, env=None):
    args = ["--config", config_name, "--iterations", iterations, "--warmup-iterations", warmup, "--device", device]
    _, runs, _ = run_runner(args + (["--batch-size", batch] if batch else []), ranks=ranks, env=env)
    run = only_run(runs)
    return float(run["throughput"]), float(run["latency_p50"])


def against(args, index, unit):
    """The runner as it is (A) vs with one environment setting (B), alternated (A B B A ...); the median B / A."""
    key, value = args.against.split("=", 1)
    sides = {"A": None, f"B ({key}={value})": {key: value}}
    ratios = []
    for repetition in range(args.repetitions):
        order = list(sides) if repetition % 2 == 0 else list(sides)[::-1]
        measured = {side: runner_numbers(args.config, args.iterations, args.warmup, args.batch_size, args.device,
                                         args.ranks, sides[side])[index] for side in order}
        a, b = (measured[side] for side in sides)
        ratios.append(b / a)
        print(f"repetition {repetition + 1}: A {a:.3f} {unit}, B {b:.3f} {unit}, B/A {b / a:.3f}", flush=True)
    print(f"median B/A {args.metric} ratio over {args.repetitions} repetitions ({args.ranks or 1} rank(s)): "
          f"{statistics.median(ratios):.3f} (spread {min(ratios):.3f} .. {max(ratios):.3f})")


def bare_numbers(config_name, iterations, warmup, batch, device):
    result = subprocess.run([sys.executable, __file__, "--bare", "--config", config_name, "--device", device,
                             "--iterations", str(iterations), "--warmup", str(warmup)]
                            + (["--batch-size", str(batch)] if batch else []),
                            cwd=REPO, capture_output=True, text=True, check=True)
    throughput, p50 = result.stdout.strip().splitlines()[-1].split()
    return float(throughput), float(p50)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="resnet50-cpu")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch-size", type=int, default=None, help="instead of the config's first batch size")
    parser.add_argument("--metric", default="throughput", choices=("throughput", "p50"),
                        help="throughput (samples/s) or p50 latency (ms) of runner / bare")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--ranks", type=int, default=None, help="run the runner under mpiexec -n RANKS")
    parser.add_argument("--against", metavar="ENV=VALUE", help="compare the runner with itself under ENV=VALUE")
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        print(*bare_loop(args.config, args.iterations, args.warmup, args.batch_size, args.device))
        return
    index, unit = (0, "samples/s") if args.metric == "throughput" else (1, "ms p50")
    if args.against:
        against(args, index, unit)
        return
    ratios = []
    for repetition in range(args.repetitions):
        order = [runner_numbers, bare_numbers] if repetition % 2 == 0 else [bare_numbers, runner_numbers]
        measured = {fn.__name__: fn(args.config, args.iterations, args.warmup, args.batch_size, args.device)[index]
                    for fn in order}
        ratio = measured["runner_numbers"] / measured["bare_numbers"]
        ratios.append(ratio)
        print(f"repetition {repetition + 1}: runner {measured['runner_numbers']:.3f} {unit}, "
              f"bare {measured['bare_numbers']:.3f} {unit}, ratio {ratio:.3f}", flush=True)
    print(f"median runner/bare {args.metric} ratio over {args.repetitions} repetitions: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
