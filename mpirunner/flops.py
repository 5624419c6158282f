"""FLOPs per sample of the benchmarked model, counted by PyTorch's own FlopCounterMode.

Counted once per job on a meta-device copy of the model (no arithmetic is done, so even
ResNeXt-101 costs milliseconds), at the run's resolution, for one sample.
"""
import copy
import logging

log = logging.getLogger("mpirunner")


def count_flops_per_sample(module, image_size, input_dtype):
    """FLOPs of one forward pass of one sample (FlopCounterMode counts a multiply-add as 2 FLOPs)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    try:
        meta_model = copy.deepcopy(module).to("meta").eval()
        sample = torch.zeros((1, 3, image_size, image_size), dtype=input_dtype, device="meta")
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            meta_model(sample)
        return int(counter.get_total_flops())
    except (RuntimeError, NotImplementedError, TypeError) as error:  # an op without a meta kernel
        log.warning("could not count FLOPs on the meta device (%s); counting on the host", error)
        host_model = copy.deepcopy(module).to("cpu").eval()
        sample = torch.zeros((1, 3, image_size, image_size), dtype=input_dtype)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            host_model(sample)
        return int(counter.get_total_flops())


def utilization_attrs(flops_per_sample, throughput, rank_throughputs, rank_hosts, rank_peaks=None):
    """Run-group attributes: FLOPs per sample, achieved FLOP/s and, with peaks, utilisation.

    Utilisation is achieved / peak, with both summed over the ranks of a host (ranks on one host
    share its roof); `utilization` is the same over all hosts together.
    """
    attrs = {"flops_per_sample": int(flops_per_sample), "achieved_flops": float(throughput * flops_per_sample)}
    if rank_peaks is None:
        return attrs
    hosts = sorted(set(rank_hosts))
    host_achieved = {h: sum(t for t, rh in zip(rank_throughputs, rank_hosts) if rh == h) * flops_per_sample for h in hosts}
    host_peak = {h: sum(p for p, rh in zip(rank_peaks, rank_hosts) if rh == h) for h in hosts}
    attrs["peak_flops"] = float(sum(rank_peaks))
    attrs["utilization"] = float(sum(host_achieved.values()) / attrs["peak_flops"])
    attrs["utilization_hosts"] = hosts
    attrs["utilization_per_host"] = [float(host_achieved[h] / host_peak[h]) for h in hosts]
    return attrs
