"""Accuracy on real data: the runner's top-1/top-5 equal a direct torchvision computation.

Runs the CLI as a user would (resnet18 at 32 px, tiny JPEG folders).
"""
import h5py
import pytest
import torch

from mpirunner.models.normalization import IMAGENET_MEAN, IMAGENET_STD
from tests.conftest import run_cli, write_jpegs


def _direct_counts(weights, folder, image_size):
    """Top-1/top-5 of the saved weights on the folder's images, computed with torchvision alone."""
    import torchvision
    from torchvision import datasets, transforms

    network = torchvision.models.resnet18()
    network.load_state_dict(torch.load(weights))
    network.eval()
    transform = transforms.Compose([transforms.Resize(int(image_size * 256 / 224)), transforms.CenterCrop(image_size),
                                    transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    dataset = datasets.ImageFolder(folder, transform=transform)
    images = torch.stack([image for image, _ in dataset])
    labels = torch.tensor([label for _, label in dataset])
    with torch.no_grad():
        top5 = network(images).topk(5, dim=1).indices
    return int((top5[:, 0] == labels).sum()), int((top5 == labels[:, None]).any(dim=1).sum()), len(labels)


def test_accuracy_from_the_runner_equals_a_direct_computation(tmp_path, tiny_args):
    import torchvision

    torch.manual_seed(11)
    network = torchvision.models.resnet18()
    with torch.no_grad():  # only classes 0..5 can win, so top-1 and top-5 over 6 class folders are informative
        network.fc.weight[6:] = 0
        network.fc.weight[:6] *= 20
        network.fc.bias[6:] = -100
    torch.save(network.state_dict(), tmp_path / "weights.pt")
    folder = tmp_path / "images"
    for label in range(6):
        write_jpegs(folder / f"class{label}", 2, seed=label)
    top1, top5, samples = _direct_counts(tmp_path / "weights.pt", folder, 32)
    assert 0 < top1 < top5 < samples  # the check below means something

    output = tmp_path / "accuracy.h5"
    # 2 ranks x 6 images each; (first call + 1 warm-up + 4 timed) x 2 = 12 samples per rank: each image twice
    result = run_cli([*tiny_args, "--data", "real", "--data-path", folder, "--weights", tmp_path / "weights.pt",
                      "--batch-size", "2", "--iterations", "4", "--output", output], ranks=2)
    assert result.returncode == 0, result.stderr
    assert "% (top-1 over" in result.stdout
    with h5py.File(output) as h5:
        run = h5["runs/bs00002"].attrs
        assert run["data"] == "real"
        assert run["accuracy_samples"] == 2 * samples
        assert (run["accuracy_top1_correct"], run["accuracy_top5_correct"]) == (2 * top1, 2 * top5)
        assert run["accuracy_top1"] == pytest.approx(top1 / samples)
        assert run["accuracy_top5"] == pytest.approx(top5 / samples)


def test_flat_folder_runs_without_accuracy(tmp_path, tiny_args):
    write_jpegs(tmp_path / "flat", 3)
    output = tmp_path / "flat.h5"
    result = run_cli([*tiny_args, "--data", "real", "--data-path", tmp_path / "flat", "--eight-bit-io",
                      "--normalization-location", "device", "--iterations", "2", "--output", output])
    assert result.returncode == 0, result.stderr
    with h5py.File(output) as h5:
        assert h5["runs/bs00001"].attrs["data"] == "real"
        assert "accuracy_top1" not in h5["runs/bs00001"].attrs
