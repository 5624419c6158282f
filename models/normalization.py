"""Input normalisation as the model's first layer, for 8-bit IO (`--normalization-location device`)."""
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class NormalizeInput(torch.nn.Module):
    """uint8 (or float 0..255) NCHW images -> (x/255 - mean) / std in the model's dtype, as one multiply-add."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("shift", -mean / std)

    def forward(self, images):
        return images.to(self.scale.dtype) * self.scale + self.shift


def normalization_location(config):
    """Where this run normalises its inputs: host, device or none. 8-bit IO with 'host' becomes 'device', as in
    the reference: uint8 bytes cannot carry normalised values."""
    if config.eight_bit_io and config.normalization_location == "host":
        return "device"
    return config.normalization_location


def normalize_on_host(images):
    """uint8 (or float 0..255) NCHW -> float32 (x/255 - mean) / std, the way torchvision's Normalize does it."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, -1, 1, 1)
    return (images.to(torch.float32) / 255.0 - mean) / std


class WithInputNormalization(torch.nn.Sequential):
    """The benchmarked network preceded by NormalizeInput."""

    def __init__(self, network):
        super().__init__(NormalizeInput(), network)
