"""Which roof binds a model (`--measure-peak`): compute (GEMM peak) or memory bandwidth, by the roofline model.

The model's arithmetic intensity is its FLOPs per sample over an ESTIMATE of the bytes it moves per
sample: every layer's output written once and read once (2 x activation bytes per sample, counted
on the meta device, no arithmetic done) plus the weights read once per micro-batch (weight bytes /
batch size). Caches, fusion and re-reads make the true traffic differ; the estimate only says which
roof is nearer. The roof a run can reach is min(GEMM peak, intensity x bandwidth), summed per host;
`roof_utilization` is the achieved FLOP/s over that roof.
"""
from dataclasses import dataclass
from typing import List

from mpirunner.flops import per_host_sums


@dataclass(frozen=True)
class Roofs:
    """The measured roofs of every rank (index = rank) and the model's traffic estimate."""

    peak_flops: List[float]
    peak_memory_bandwidth: List[float]
    weight_bytes: int
    activation_bytes_per_sample: int


def traffic_estimate(module, image_size, input_dtype, compute_dtype):
    """(weight bytes, activation bytes per sample): parameters and buffers, and every leaf module's output
    for one sample in the compute dtype, counted on a meta-device copy."""
    import copy

    import torch

    itemsize = torch.empty(0, dtype=compute_dtype).element_size()
    weights = sum(t.numel() for t in list(module.parameters()) + list(module.buffers())) * itemsize
    model = copy.deepcopy(module).to("meta").eval()
    outputs = []

    def count(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            outputs.append(output.numel())

    hooks = [leaf.register_forward_hook(count) for leaf in model.modules() if not list(leaf.children())]
    try:
        with torch.no_grad():
            model(torch.zeros((1, 3, image_size, image_size), dtype=input_dtype, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return int(weights), int(sum(outputs) * itemsize)


def rank_roofs(rank_rows, module, image_size, input_dtype, compute_dtype):
    """Roofs from the gathered /ranks rows (their peak_flops and peak_memory_bandwidth) and the model."""
    weight_bytes, activation_bytes = traffic_estimate(module, image_size, input_dtype, compute_dtype)
    return Roofs([float(row["peak_flops"]) for row in rank_rows],
                 [float(row["peak_memory_bandwidth"]) for row in rank_rows], weight_bytes, activation_bytes)


def roof_attrs(flops_per_sample, achieved_flops, rank_hosts, roofs, batch_size):
    """Run-group attributes: both roofs (summed over ranks), the intensity estimate, the binding roof and
    the utilisation of the roof the run can reach (min of the two roofs, per host, summed)."""
    bytes_per_sample = 2.0 * roofs.activation_bytes_per_sample + roofs.weight_bytes / max(batch_size, 1)
    intensity = flops_per_sample / bytes_per_sample if bytes_per_sample else float("inf")
    hosts = sorted(set(rank_hosts))
    compute = per_host_sums(roofs.peak_flops, rank_hosts)
    bandwidth = per_host_sums(roofs.peak_memory_bandwidth, rank_hosts)
    reachable = sum(min(compute[h], intensity * bandwidth[h]) for h in hosts)
    memory_bound = intensity * sum(bandwidth.values()) < sum(compute.values())
    return {"peak_memory_bandwidth": float(sum(roofs.peak_memory_bandwidth)),
            "bytes_per_sample_estimate": float(bytes_per_sample),
            "arithmetic_intensity_estimate": float(intensity),
            "binding_roof": "memory bandwidth" if memory_bound else "compute (GEMM peak)",
            "roof_flops": float(reachable),
            "roof_utilization": float(achieved_flops / reachable) if reachable else float("nan")}
