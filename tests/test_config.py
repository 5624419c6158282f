"""Config layering, named configs and batch-size parsing (no torch needed)."""
import pytest

from mpirunner.config import CONFIG_DIR, config_names, parse_batch_sizes, resolve_config
from mpirunner.errors import UsageError
from tests.conftest import run_cli


def test_named_config_values_and_command_line_override():
    config = resolve_config({"config": "resnet50-mk2"})
    assert config.model == "resnet50"
    assert config.batch_sizes == (90,)
    assert config.device_iterations == 128
    assert config.eight_bit_io and config.half_partial
    assert config.normalization_location == "device"  # 'ipu' is an alias
    overridden = resolve_config({"config": "resnet50-mk2", "batch_size": "1,2", "device_iterations": 4})
    assert overridden.batch_sizes == (1, 2)
    assert overridden.device_iterations == 4
    assert overridden.precision == "16.16"


def test_reference_config_values():
    assert resolve_config({"config": "efficientnet-b0-mk2"}).batch_sizes == (49,)
    assert resolve_config({"config": "efficientnet-b4-mk2"}).batch_sizes == (12,)
    resnext = resolve_config({"config": "resnext101-mk2"})
    assert (resnext.model, resnext.num_io_tiles, resnext.batch_sizes) == ("resnext101", 32, (16,))


def test_config_file_path_and_unknown_key(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text("model: resnet18\nbatch_size: 4\n")
    config = resolve_config({"config": str(good)})
    assert (config.model, config.batch_sizes, config.name) == ("resnet18", (4,), "mine")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: resnet18\nbatch_szie: 4\n")
    with pytest.raises(UsageError, match=r"unknown key 'batch_szie'.*batch_size") as error:
        resolve_config({"config": str(bad)})
    assert str(bad) in str(error.value)


def test_bad_yaml_and_unknown_config(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [resnet18\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        resolve_config({"config": str(broken)})
    with pytest.raises(UsageError, match="did you mean resnet50-cpu"):
        resolve_config({"config": "resnet50-cpuu"})


@pytest.mark.parametrize("text, sizes", [
    ("8", (8,)), ("1,2,4,8", (1, 2, 4, 8)), ("1..5", (1, 2, 3, 4, 5)), ("8..32/8", (8, 16, 24, 32)),
    ("1,4..6", (1, 4, 5, 6)),
])
def test_batch_sizes(text, sizes):
    assert parse_batch_sizes(text) == sizes


@pytest.mark.parametrize("text, message", [
    ("0", "at least 1"), ("-1", "at least 1"), ("abc", "not a size"), ("8..1", "runs backwards"),
    ("", "empty"), ("1,1", "twice"), ("4..8/0", "step"),
])
def test_bad_batch_sizes(text, message):
    with pytest.raises(UsageError, match=message):
        parse_batch_sizes(text)


def test_bad_values_name_their_origin(tmp_path):
    with pytest.raises(UsageError, match="--iterations.*at least 1"):
        resolve_config({"iterations": 0})
    config_file = tmp_path / "c.yaml"
    config_file.write_text("iterations: ten\n")
    with pytest.raises(UsageError, match=f"config {config_file}.*whole number"):
        resolve_config({"config": str(config_file)})


def test_eight_bit_io_with_no_normalisation_is_an_error():
    with pytest.raises(UsageError, match="raw bytes"):
        resolve_config({"eight_bit_io": True, "normalization_location": "none"})


def test_list_configs_lists_the_twelve_configs():
    result = run_cli(["--list-configs"])
    assert result.returncode == 0
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    assert sorted(listed) == sorted(config_names())
    assert set(listed) == {f"{m}-{kind}" for m in ("resnet50", "efficientnet-b0", "efficientnet-b4", "resnext101")
                           for kind in ("cpu", "gpu", "mk2")}
    assert len(list(CONFIG_DIR.glob("*.yaml"))) == 12


def test_bad_batch_size_exits_2_with_one_line():
    result = run_cli(["--batch-size", "8..1"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["mpirunner: error: --batch-size range '8..1' runs backwards; write it as 1..8"]
