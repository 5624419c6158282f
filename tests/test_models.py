"""Model variants and weights: norm swap, EfficientNet group dim and expand ratio, strict weight loading.

Unit tests build the network directly (resnet18 at 32 px); the rest run the CLI as a user would.
"""
import pytest
import torch

from mpirunner.models.assembly import build_network
from mpirunner.config import resolve_config
from mpirunner.errors import UsageError
from tests.conftest import run_cli, tiny_config


def test_group_norm_swap_leaves_no_batch_norm():
    batch_norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in build_network(tiny_config()).modules())
    network = build_network(tiny_config(norm_type="group", norm_num_groups=16, norm_eps=1e-3))
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in network.modules())
    group_norms = [m for m in network.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(group_norms) == batch_norms > 0
    assert all(m.num_groups == 16 and m.eps == 1e-3 for m in group_norms)
    assert network(torch.randn(2, 3, 32, 32)).shape == (2, 1000)
    bare = build_network(tiny_config(norm_type="none"))
    assert not any(isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm)) for m in bare.modules())


def test_groups_that_do_not_divide_channels_are_a_usage_error(tiny_args):
    with pytest.raises(UsageError, match="does not divide the 64 channels"):
        build_network(tiny_config(norm_type="group", norm_num_groups=5))
    result = run_cli([*tiny_args, "--norm-type", "group", "--norm-num-groups", "5"])
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("mpirunner: error:")]
    assert len(errors) == 1 and "--norm-num-groups 5" in errors[0]
    assert "Traceback" not in result.stderr


def test_efficientnet_group_dim_and_expand_ratio():
    def depthwise_like(network):
        return [m for m in network.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]

    plain = build_network(resolve_config({"model": "efficientnet-b0"}))
    assert all(m.groups == m.in_channels for m in depthwise_like(plain))
    grouped = build_network(resolve_config({"model": "efficientnet-b0", "efficientnet_group_dim": 16}))
    convs = depthwise_like(grouped)
    assert len(convs) == len(depthwise_like(plain))
    assert all(m.groups == m.in_channels // 16 and m.weight.shape[1] == 16 for m in convs)
    expanded = build_network(resolve_config({"model": "efficientnet-b0", "efficientnet_expand_ratio": 4}))
    widths = sorted({m.in_channels for m in depthwise_like(expanded)})
    assert widths == [32, 64, 96, 160, 320, 448, 768]  # stage inputs 16, 24, 40, 80, 112, 192 x 4; MBConv1 stays 32
    with pytest.raises(UsageError, match="efficientnet-b0..b7 only"):
        build_network(tiny_config(efficientnet_group_dim=16))


def test_weights_load_strictly_and_a_mismatch_names_the_keys(tmp_path, tiny_args):
    torch.manual_seed(7)
    import torchvision

    saved = torchvision.models.resnet18()
    torch.save(saved.state_dict(), tmp_path / "r18.pt")
    loaded = build_network(tiny_config(weights=str(tmp_path / "r18.pt")))
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), saved.state_dict().values()))
    assert not torch.equal(build_network(tiny_config()).fc.weight, saved.fc.weight)  # not the seeded default

    result = run_cli([*tiny_args, "--model", "resnet34", "--weights", tmp_path / "r18.pt"])
    assert result.returncode == 2
    assert "missing keys: layer1.2." in result.stderr and "does not match model resnet34" in result.stderr
    state = saved.state_dict()
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pt")
    with pytest.raises(UsageError, match="unexpected keys: extra.weight"):
        build_network(tiny_config(weights=str(tmp_path / "extra.pt")))
