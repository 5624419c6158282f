"""Top-1 / top-5 accuracy on labelled real data: every rank's counts (data.TopKCounter, made outside the
timed steps) summed on rank 0. A measurement recorded with the run, never a reason to invalidate it."""
from mpirunner.checks.check import passed


def gather_accuracy(world, source):
    """Collective: rank 0 gets the accuracy Check (its attrs are the run attributes); None elsewhere or
    without labels."""
    counts = source.accuracy_counts()
    if counts is None:  # the same on every rank: all ranks read the same folder
        return None
    gathered = world.gather(counts)
    if not world.is_root:
        return None
    samples = sum(row["samples"] for row in gathered)
    top1 = sum(row["top1"] for row in gathered)
    top5 = sum(row["top5"] for row in gathered)
    return passed("accuracy", {
        "accuracy_samples": samples, "accuracy_top1_correct": top1, "accuracy_top5_correct": top5,
        "accuracy_top1": top1 / samples if samples else float("nan"),
        "accuracy_top5": top5 / samples if samples else float("nan"),
    })
