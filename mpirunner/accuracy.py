"""Top-1 / top-5 accuracy of the benchmarked model on labelled real data, counted per rank, summed on rank 0.

Counting happens outside the timed region: the step wrapper of data.RealInput only keeps a reference
to each step's outputs, and the counts are made when the next input is fetched (bench fetches inputs
before a step's clock starts) or when the run ends. Every step of the run is counted: the first
(compile) call, the warm-up steps and the timed steps.
"""
import logging

log = logging.getLogger("mpirunner")


class TopKCounter:
    """Running counts of samples whose label is the top-1 / among the top-5 outputs."""

    def __init__(self):
        self.samples = 0
        self.top1 = 0
        self.top5 = 0
        self.warned = False

    def add(self, outputs, labels):
        import torch

        logits = torch.as_tensor(outputs).detach().reshape(-1, outputs.shape[-1]).float().cpu()
        if logits.shape[0] != labels.shape[0]:
            if not self.warned:
                log.warning("accuracy: a step returned %d outputs for %d labels; such steps are not counted",
                            logits.shape[0], labels.shape[0])
                self.warned = True
            return
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == labels.view(-1, 1)
        self.samples += int(labels.shape[0])
        self.top1 += int(hits[:, 0].sum())
        self.top5 += int(hits.any(dim=1).sum())

    def counts(self):
        return {"samples": self.samples, "top1": self.top1, "top5": self.top5}


def gather_accuracy(world, source):
    """Collective: every rank's counts summed on rank 0 -> run attributes there (None elsewhere, or without labels)."""
    counts = source.accuracy_counts()
    if counts is None:  # the same on every rank: all ranks read the same folder
        return None
    gathered = world.gather(counts)
    if not world.is_root:
        return None
    samples = sum(row["samples"] for row in gathered)
    top1 = sum(row["top1"] for row in gathered)
    top5 = sum(row["top5"] for row in gathered)
    attrs = {
        "accuracy_samples": samples, "accuracy_top1_correct": top1, "accuracy_top5_correct": top5,
        "accuracy_top1": top1 / samples if samples else float("nan"),
        "accuracy_top5": top5 / samples if samples else float("nan"),
    }
    print(f"accuracy: top-1 {100 * attrs['accuracy_top1']:.2f}%  top-5 {100 * attrs['accuracy_top5']:.2f}%  "
          f"over {samples} samples of all ranks", flush=True)
    return attrs
