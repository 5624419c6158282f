"""Top-1 / top-5 accuracy on labelled real data: every rank's counts (data.TopKCounter, made outside the
timed steps, source.accuracy_counts()) summed on rank 0. A measurement recorded with the run, never a reason to
invalidate it. point.py gathers the counts (a stage that may run out of memory, memory.SizeAgreement.stage)."""
from mpirunner.checks.check import passed


def weights_kind(weights):
    """What the weights of the run are, for the accuracy lines: 'random', 'torchvision' or the file."""
    return weights or "random"


def accuracy_check(gathered, weights=None):
    """Every rank's accuracy counts -> the accuracy Check rank 0 keeps (its attrs are the run attributes).
    `weights`: --weights (None: seeded random weights, so accuracy is at chance level)."""
    samples = sum(row["samples"] for row in gathered)
    top1 = sum(row["top1"] for row in gathered)
    top5 = sum(row["top5"] for row in gathered)
    classes = gathered[0]["classes"]
    return passed("accuracy", {
        "accuracy_samples": samples, "accuracy_top1_correct": top1, "accuracy_top5_correct": top5,
        "accuracy_top1": top1 / samples if samples else float("nan"),
        "accuracy_top5": top5 / samples if samples else float("nan"),
        "accuracy_images": sum(row["images"] for row in gathered),  # decoded images, all ranks together
        "accuracy_classes": len(classes),
        "accuracy_class_map": "; ".join(f"{name}={index}" for index, name in enumerate(classes)),
        "accuracy_model_classes": max(row["model_classes"] for row in gathered),
        "accuracy_weights": weights_kind(weights),
    })
