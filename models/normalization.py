"""Input normalisation as the model's first layer, for 8-bit IO (`--normalization-location device`)."""
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class NormalizeInput(torch.nn.Module):
    """uint8 (or float 0..255) NCHW images -> (x/255 - mean) / std in the dtype of the model.

    One fused multiply-add per pixel: x * scale + shift, with scale = 1/(255 std), shift = -mean/std.
    """

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("shift", -mean / std)

    def forward(self, images):
        images = images.to(self.scale.dtype)
        return images * self.scale + self.shift


class WithInputNormalization(torch.nn.Sequential):
    """The benchmarked network preceded by NormalizeInput."""

    def __init__(self, network):
        super().__init__(NormalizeInput(), network)
