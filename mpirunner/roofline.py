"""Which roof binds a model (`--measure-peak`): compute (GEMM peak) or memory bandwidth, by the roofline model.
Its intensity is FLOPs over an ESTIMATE of the bytes moved per sample (every layer's output written and read
once, the weights once per micro-batch): it only says which roof is nearer."""
import math
from dataclasses import dataclass
from typing import List, Optional

from mpirunner.flops import per_host_sums

UTILIZATION_KEYS = ("utilization", "utilization_hosts", "utilization_per_host", "roof_utilization")


@dataclass(frozen=True)
class Roofs:
    """The measured roofs of every rank (index = rank) and the model's traffic estimate."""

    peak_flops: List[float]
    peak_memory_bandwidth: List[float]
    weight_bytes: int
    activation_bytes_per_sample: int
    peak_flops_median: Optional[List[float]] = None   # the median timed batch of each rank (None: older rows)


def traffic_estimate(module, image_size, input_dtype, compute_dtype):
    """(weight bytes, activation bytes per sample in the compute dtype), on a meta-device copy."""
    import copy

    import torch

    itemsize = torch.empty(0, dtype=compute_dtype).element_size()
    weights = sum(t.numel() for t in list(module.parameters()) + list(module.buffers())) * itemsize
    model = copy.deepcopy(module).to("meta").eval()
    outputs = []

    def count(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            outputs.append(output.numel())

    for leaf in model.modules():  # the hooks stay on this throwaway copy
        if not list(leaf.children()):
            leaf.register_forward_hook(count)
    with torch.no_grad():
        model(torch.zeros((1, 3, image_size, image_size), dtype=input_dtype, device="meta"))
    return int(weights), int(sum(outputs) * itemsize)


def rank_roofs(rank_rows, module, image_size, input_dtype, compute_dtype):
    """Roofs from the gathered /ranks rows (their peak_flops and peak_memory_bandwidth) and the model."""
    weight_bytes, activation_bytes = traffic_estimate(module, image_size, input_dtype, compute_dtype)
    medians = [row.get("peak_flops_median") for row in rank_rows]
    return Roofs([float(row["peak_flops"]) for row in rank_rows],
                 [float(row["peak_memory_bandwidth"]) for row in rank_rows], weight_bytes, activation_bytes,
                 [float(median) for median in medians] if None not in medians else None)


def roof_attrs(flops_per_sample, achieved_flops, rank_hosts, roofs, batch_size):
    """Run-group attributes: both roofs (summed over ranks), the intensity estimate, the binding roof and the
    utilisation of the roof the run can reach, min(GEMM peak, intensity x bandwidth) per host, summed."""
    bytes_per_sample = 2.0 * roofs.activation_bytes_per_sample + roofs.weight_bytes / max(batch_size, 1)
    intensity = flops_per_sample / bytes_per_sample if bytes_per_sample else float("inf")
    hosts = sorted(set(rank_hosts))
    compute = per_host_sums(roofs.peak_flops, rank_hosts)
    bandwidth = per_host_sums(roofs.peak_memory_bandwidth, rank_hosts)
    reachable = sum(min(compute[h], intensity * bandwidth[h]) for h in hosts)
    memory_bound = intensity * sum(bandwidth.values()) < sum(compute.values())
    spread = {} if roofs.peak_flops_median is None else {"peak_flops_median": float(sum(roofs.peak_flops_median))}
    return {**spread, "peak_memory_bandwidth": float(sum(roofs.peak_memory_bandwidth)),
            "bytes_per_sample_estimate": float(bytes_per_sample),
            "arithmetic_intensity_estimate": float(intensity),
            "binding_roof": "memory bandwidth" if memory_bound else "compute (GEMM peak)",
            "roof_flops": float(reachable),
            "roof_utilization": float(achieved_flops / reachable) if reachable else float("nan")}


def broken_roof(compute):
    """The run's compute attributes, or, when any utilisation is above 1 (the roof was timed under load), the same
    without any utilisation, with `roof_broken` True and the largest share as `achieved_over_roof`."""
    shares = [compute.get("utilization"), compute.get("roof_utilization"), *compute.get("utilization_per_host", [])]
    shares = [float(share) for share in shares if share is not None and math.isfinite(float(share))]
    if not shares or max(shares) <= 1.0:
        return compute
    kept = {key: value for key, value in compute.items()  # the key and, in a stored file, its unit-named twin
            if key not in UTILIZATION_KEYS and key.removesuffix("_percent") not in UTILIZATION_KEYS}
    return {**kept, "roof_broken": True, "achieved_over_roof": max(shares)}
