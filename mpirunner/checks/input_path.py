"""The input path's checks: the runner's own time between steps ("runner overhead") and a device that
waited for its input ("input-bound"), from the per-rank shares of stats.input_shares."""
import numpy as np

from mpirunner.checks.check import failed, passed
from mpirunner.checks.rules import rank_name

HOST_GAP_LIMIT = 0.02      # more of a rank's window between steps than this: the runner measured itself
DEVICE_BUSY_LIMIT = 0.8    # less of a rank's window in batch latency than this: the device waited for input


def host_gap_check(host_gap, hosts=None):
    """Fails, naming the worst rank, when a rank spent more than HOST_GAP_LIMIT of its window between steps."""
    if host_gap is not None and np.any(np.asarray(host_gap) > HOST_GAP_LIMIT):
        rank = int(np.nanargmax(host_gap))
        return failed("host_gap", f"runner overhead: {100 * host_gap[rank]:.1f}% of the window between steps "
                                  f"on {rank_name(rank, hosts, bracketed=True)} (remedy: larger --batch-size or "
                                  f"--device-iterations, --data generated to rule out the input)")
    return passed("host_gap")


def device_busy_check(device_busy, hosts=None):
    """Fails, naming the least busy rank, below DEVICE_BUSY_LIMIT. Pass device_busy None where batch
    latency is not device time: then there is nothing to judge."""
    if device_busy is not None and np.any(np.asarray(device_busy) < DEVICE_BUSY_LIMIT):
        rank = int(np.nanargmin(device_busy))
        return failed("device_busy", f"input-bound: device busy {100 * device_busy[rank]:.0f}% of the window "
                                     f"on {rank_name(rank, hosts, bracketed=True)} (remedy: --data generated, a "
                                     f"larger --input-pool-mib, or more CPUs per rank for decoding)")
    return passed("device_busy")


def input_path_checks(host_gap=None, device_busy=None, hosts=None):
    return [host_gap_check(host_gap, hosts), device_busy_check(device_busy, hosts)]
