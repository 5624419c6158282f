"""FLOPs per sample of the benchmarked model, counted by PyTorch's FlopCounterMode once per job on a meta-device
copy of the model: no arithmetic is done, so the cost is the copy (about a second for ResNeXt-101)."""
import copy
import logging

log = logging.getLogger("mpirunner")


def _count_on(device, module, image_size, input_dtype):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(module).to(device).eval()
    sample = torch.zeros((1, 3, image_size, image_size), dtype=input_dtype, device=device)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(sample)
    return int(counter.get_total_flops())


def count_flops_per_sample(module, image_size, input_dtype):
    """FLOPs of one forward pass of one sample (FlopCounterMode counts a multiply-add as 2 FLOPs)."""
    try:
        return _count_on("meta", module, image_size, input_dtype)
    except (RuntimeError, NotImplementedError, TypeError) as error:  # an op without a meta kernel
        log.warning("could not count FLOPs on the meta device (%s); counting on the host", error)
        return _count_on("cpu", module, image_size, input_dtype)


def per_host_sums(rank_values, rank_hosts):
    """{host: the sum of its ranks' values}, hosts sorted: ranks on one host share its roofs."""
    return {h: sum(v for v, rh in zip(rank_values, rank_hosts) if rh == h) for h in sorted(set(rank_hosts))}


def utilization_attrs(flops_per_sample, throughput, rank_throughputs, rank_hosts, rank_peaks=None):
    """Run-group attributes: FLOPs per sample, achieved FLOP/s and, with peaks, utilisation: achieved / peak,
    both summed over the ranks of a host (they share its roof), and `utilization` over all hosts together."""
    attrs = {"flops_per_sample": int(flops_per_sample), "achieved_flops": float(throughput * flops_per_sample)}
    if rank_peaks is None:
        return attrs
    hosts = sorted(set(rank_hosts))
    host_achieved = {h: rate * flops_per_sample for h, rate in per_host_sums(rank_throughputs, rank_hosts).items()}
    host_peak = per_host_sums(rank_peaks, rank_hosts)
    attrs["peak_flops"] = float(sum(rank_peaks))
    attrs["utilization"] = float(sum(host_achieved.values()) / attrs["peak_flops"])
    attrs["utilization_hosts"] = hosts
    attrs["utilization_per_host"] = [float(host_achieved[h] / host_peak[h]) for h in hosts]
    return attrs
