"""Input path: does the runner measure itself? generated, real and synthetic data side by side.

A small-compute model at a large batch makes the input path visible on a CPU: each mode runs as a
user would run it (fresh process, one rank), in one sitting, and the script prints each mode's
host_gap (share of the window between steps), device_busy and throughput, then the throughput
ratios to synthetic data. Targets (issue 13): host_gap <= 1% for generated and real; generated
>= 0.95x synthetic.

    python benchmarks/input_path.py --model mobilenet_v3_small --image-size 224 --batch-size 256 --iterations 10

On a GPU (benchmarks/gpu_check.sh): --config resnet50-gpu --batch-size 1,32,256 --variants graphs,inductor
--bare-copy-loop --results benchmarks/RESULTS.md adds the bare eager loop that copies a pinned uint8 batch
to the GPU and synchronises every step (the honest floor of host IO) and writes the table into RESULTS.md.
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np

from common import only_run, run_runner


def write_images(folder, count, size=256, seed=0):
    """`count` different JPEGs in one class folder (decoded once by the runner, before timing)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    target = Path(folder) / "class0"
    target.mkdir(parents=True)
    for index in range(count):
        pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(target / f"img{index:03d}.jpg", quality=90)


def bare_copy_loop(batch_size, iterations, warmup=5):
    """Eager float16 ResNet-50, channels_last: copy a pinned uint8 batch to the GPU and synchronise every step."""
    import time

    import torch
    import torchvision

    device = torch.device("cuda")
    model = torchvision.models.resnet50().eval().half().to(device).to(memory_format=torch.channels_last)
    host = torch.randint(0, 256, (batch_size, 3, 224, 224), dtype=torch.uint8).pin_memory()
    with torch.inference_mode():
        for index in range(warmup + iterations):
            if index == warmup:
                torch.cuda.synchronize()
                start = time.perf_counter()
            images = host.to(device, non_blocking=True).half().contiguous(memory_format=torch.channels_last)
            model(images)
            torch.cuda.synchronize()
    return batch_size * iterations / (time.perf_counter() - start)


def write_table(results_path, lines):
    """Put the table between the input_path_gpu markers of RESULTS.md (appended with them when absent)."""
    begin, end = "<!-- input_path_gpu:begin -->", "<!-- input_path_gpu:end -->"
    text = Path(results_path).read_text()
    block = "\n".join([begin, *lines, end])
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    Path(results_path).write_text(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="a named config (then --model/--image-size/--device come from it)")
    parser.add_argument("--model", default="mobilenet_v3_small")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", default="256", help="one size or a list (1,32,256)")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--images", type=int, default=64, help="JPEGs for --data real")
    parser.add_argument("--variants", default="plain", help="plain, graphs (--cuda-graphs), inductor (+ --compile inductor)")
    parser.add_argument("--bare-copy-loop", action="store_true", help="also time the bare eager copy-every-step loop (GPU)")
    parser.add_argument("--results", help="write the table into this RESULTS.md")
    args = parser.parse_args()
    common = (["--config", args.config] if args.config else
              ["--model", args.model, "--image-size", args.image_size, "--device", "cpu"])
    common += ["--batch-size", args.batch_size, "--iterations", args.iterations]
    variant_flags = {"plain": [], "graphs": ["--cuda-graphs"], "inductor": ["--cuda-graphs", "--compile", "inductor"]}
    rows = []  # (variant, mode, attrs)
    with tempfile.TemporaryDirectory() as folder:
        write_images(Path(folder) / "images", args.images)
        for variant in args.variants.split(","):
            flags = variant_flags[variant] + (["--model-cache-path", Path(folder) / "cache"] if variant == "inductor" else [])
            for mode in ("generated", "real", "synthetic"):
                extra = ["--data-path", Path(folder) / "images"] if mode == "real" else []
                _, runs, _ = run_runner([*common, *flags, "--data", mode, *extra])
                rows.extend((variant, mode, attrs) for attrs in runs.values())
    where = args.config or f"{args.model}, {args.image_size} px, CPU"
    lines = [f"{where}, batch {args.batch_size}, {args.iterations} timed steps, 1 rank", "",
             "| variant | batch | data | samples/s | x synthetic | host_gap | device_busy | pool | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    synthetic = {(v, a["batch_size"]): a["throughput"] for v, m, a in rows if m == "synthetic"}
    for variant, mode, attrs in rows:
        verdict = "VALID" if attrs["valid"] else "INVALID: " + "; ".join(map(str, attrs["validity_reason"]))
        pool = f"{attrs['input_pool_steps']} x {attrs['input_pool_bytes'] / attrs['input_pool_steps'] / 2**20:.1f} MiB"
        ratio = attrs["throughput"] / synthetic[(variant, attrs["batch_size"])]
        lines.append(f"| {variant} | {attrs['batch_size']} | {mode} | {attrs['throughput']:.2f} | {ratio:.3f} | "
                     f"{100 * attrs['host_gap_max']:.2f}% | {100 * attrs['device_busy_min']:.1f}% | {pool} | {verdict} |")
    if args.bare_copy_loop:
        lines += ["", "| bare eager loop, pinned uint8 copy + synchronise every step | batch | samples/s |", "|---|---|---|"]
        for batch_size in map(int, args.batch_size.split(",")):
            lines.append(f"| resnet50 fp16 channels_last | {batch_size} | {bare_copy_loop(batch_size, args.iterations):.2f} |")
    print("\n".join(lines))
    if args.results:
        write_table(args.results, lines)


if __name__ == "__main__":
    main()
