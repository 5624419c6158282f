"""Model variants of the reference flags: norm-layer swap (`--norm-type`) and EfficientNet group dim / expand ratio.
They change the network before its weights are set, so `--weights` of a variant loads into that variant."""
import contextlib
import math

import torch

from mpirunner.errors import UsageError

DEFAULT_EXPAND_RATIO = 6  # torchvision's (and the paper's) MBConv6 stages


def _replace_modules(root, should_replace, make_replacement):
    """Replace every submodule for which should_replace(module) holds (none when one replacement raises)."""
    targets = [(name, module) for name, module in root.named_modules() if name and should_replace(module)]
    replacements = [make_replacement(name, module) for name, module in targets]
    for (name, _), replacement in zip(targets, replacements):
        parent_name, _, child = name.rpartition(".")
        setattr(root.get_submodule(parent_name) if parent_name else root, child, replacement)


def swap_norm_layers(network, norm_type, num_groups=32, eps=1e-5):
    """--norm-type: 'batch' keeps the BatchNorm layers, 'group' puts GroupNorm(num_groups, eps) in place of each,
    'none' removes them."""
    if norm_type == "batch":
        return

    def is_batch_norm(module):
        return isinstance(module, torch.nn.modules.batchnorm._BatchNorm)

    def group_norm(name, bn):
        if bn.num_features % num_groups:
            largest = math.gcd(*[module.num_features for module in network.modules() if is_batch_norm(module)])
            raise UsageError(f"--norm-num-groups {num_groups} does not divide the {bn.num_features} channels of "
                             f"layer '{name}'; choose a divisor of every norm layer's channels "
                             f"(largest for this model: {largest})")
        return torch.nn.GroupNorm(num_groups, bn.num_features, eps=eps, affine=True)

    _replace_modules(network, is_batch_norm, group_norm if norm_type == "group" else lambda *_: torch.nn.Identity())


@contextlib.contextmanager
def efficientnet_expand_ratio(ratio):
    """While active, torchvision's EfficientNet builders use `ratio` for every MBConv stage that expands
    (ratio != 1; the first stage, MBConv1, stays unexpanded, as in the reference)."""
    from torchvision.models import efficientnet

    original = efficientnet._efficientnet_conf

    def with_ratio(*args, **kwargs):
        settings, last_channel = original(*args, **kwargs)
        for setting in settings:
            if setting.expand_ratio != 1:
                setting.expand_ratio = ratio
        return settings, last_channel

    efficientnet._efficientnet_conf = with_ratio
    try:
        yield
    finally:
        efficientnet._efficientnet_conf = original


def set_depthwise_group_dim(network, group_dim):
    """Depthwise convs become group convs of `group_dim` channels per group (the reference's G16 variants: 16)."""
    if group_dim == 1:
        return

    def is_depthwise(module):
        return (isinstance(module, torch.nn.Conv2d) and module.groups > 1
                and module.groups == module.in_channels == module.out_channels)

    def group_conv(name, conv):
        if conv.in_channels % group_dim:
            raise UsageError(f"--efficientnet-group-dim {group_dim} does not divide the {conv.in_channels} channels "
                             f"of depthwise conv '{name}'")
        replacement = torch.nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                                      padding=conv.padding, dilation=conv.dilation,
                                      groups=conv.in_channels // group_dim, bias=conv.bias is not None)
        torch.nn.init.kaiming_normal_(replacement.weight, mode="fan_out")  # torchvision EfficientNet's init
        if replacement.bias is not None:
            torch.nn.init.zeros_(replacement.bias)
        return replacement

    _replace_modules(network, is_depthwise, group_conv)
