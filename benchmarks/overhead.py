"""Runner overhead: `python -m mpirunner` vs a bare PyTorch loop on the same model settings.

Both run in fresh single processes, interleaved (runner, bare, bare, runner, ...), 5 repetitions;
the ratio reported is the median of runner / bare throughput. Target: >= 0.98.

    python benchmarks/overhead.py --config resnet50-cpu --iterations 30 --repetitions 5
"""
import argparse
import statistics
import subprocess
import sys
import time

from common import REPO, only_run, run_runner


def bare_loop(config_name, iterations, warmup):
    """The loop a user would write by hand: same model, dtype, layout, threads, batch and step count."""
    import torch
    import torchvision

    from mpirunner.config import resolve_config
    from mpirunner.models.normalization import WithInputNormalization
    from mpirunner.models.registry import default_resolution, torchvision_name

    config = resolve_config({"config": config_name})
    batch = config.batch_sizes[0]
    size = config.image_size or default_resolution(config.model)
    dtype = torch.bfloat16 if config.precision == "16.16" else torch.float32
    layout = torch.channels_last if config.channels_last else torch.contiguous_format
    torch.manual_seed(0)
    model = torchvision.models.get_model(torchvision_name(config.model), weights=None)
    if config.eight_bit_io:
        model = WithInputNormalization(model)
    model = model.to(dtype).to(memory_format=layout).eval()
    if config.compile == "inductor":
        import torch._inductor.config

        torch._inductor.config.freezing = True
        model = torch.compile(model, backend="inductor", dynamic=False)
    if config.eight_bit_io:
        images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    else:
        images = torch.randn(batch, 3, size, size).to(dtype)
    images = images.contiguous(memory_format=layout)
    with torch.inference_mode():
        for _ in range(warmup + 1):
            model(images)
        start = time.perf_counter()
        for _ in range(iterations):
            model(images)
        elapsed = time.perf_counter() - start
    return batch * iterations / elapsed


def runner_throughput(config_name, iterations, warmup):
    _, runs, _ = run_runner(["--config", config_name, "--iterations", iterations,
                             "--warmup-iterations", warmup])
    return float(only_run(runs)["throughput"])


def bare_throughput(config_name, iterations, warmup):
    result = subprocess.run([sys.executable, __file__, "--bare", "--config", config_name,
                             "--iterations", str(iterations), "--warmup", str(warmup)],
                            cwd=REPO, capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="resnet50-cpu")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        print(bare_loop(args.config, args.iterations, args.warmup))
        return
    ratios = []
    for repetition in range(args.repetitions):
        order = [runner_throughput, bare_throughput] if repetition % 2 == 0 else [bare_throughput, runner_throughput]
        measured = {fn.__name__: fn(args.config, args.iterations, args.warmup) for fn in order}
        ratio = measured["runner_throughput"] / measured["bare_throughput"]
        ratios.append(ratio)
        print(f"repetition {repetition + 1}: runner {measured['runner_throughput']:.2f} samples/s, "
              f"bare {measured['bare_throughput']:.2f} samples/s, ratio {ratio:.3f}", flush=True)
    print(f"median runner/bare ratio over {args.repetitions} repetitions: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
