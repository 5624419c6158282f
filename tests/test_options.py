"""The option table (mpirunner/options.py) is the one declaration of every flag: the parser, the defaults,
config validation, the unused-flag warning and docs/flags.md all follow it."""
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

from mpirunner.cli import build_parser
from mpirunner.config import RunConfig, resolve_config
from mpirunner.errors import UsageError
from mpirunner.options import DEFAULTS, OPTIONS, flags_markdown, option, refuse, unused_on
from tests.conftest import REPO, run_cli

FLAGS_PAGE = REPO / "docs" / "flags.md"


def test_docs_flags_md_is_what_the_table_generates():
    assert FLAGS_PAGE.read_text() == flags_markdown(), \
        "docs/flags.md is stale: run `python -m mpirunner.options > docs/flags.md`"


def test_every_flag_of_help_is_on_the_flags_page():
    result = run_cli(["--help"])
    assert result.returncode == 0
    help_flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", result.stdout)) - {"--help"}
    page = FLAGS_PAGE.read_text()
    page_flags = set(re.findall(r"`(--[a-z][a-z0-9-]*)`", page))
    assert len(help_flags) >= len(OPTIONS)  # the regex did find the flags of --help
    assert help_flags - page_flags == set()
    assert "--no-channels-last" in page_flags and "`-h`, `--help`" in page


def test_the_parser_has_every_option_and_keeps_no_defaults():
    parser = build_parser()
    spelled = {flag for action in parser._actions for flag in action.option_strings}
    assert {o.flag for o in OPTIONS} <= spelled
    assert vars(parser.parse_args([])) == {}  # layering knows exactly what the user typed
    given = vars(parser.parse_args(["--iterations", "5", "--no-channels-last", "--normalization-location", "ipu"]))
    assert given == {"iterations": 5, "channels_last": False, "normalization_location": "ipu"}


def test_defaults_and_run_config_fields_come_from_the_table():
    config = resolve_config({})
    settings = [o.dest for o in OPTIONS if o.is_setting and o.dest != "batch_size"]
    for dest in settings:
        assert getattr(config, dest) == DEFAULTS[dest]
    assert set(settings) | {"config", "config_text", "argv", "batch_sizes", "config_device"} == set(RunConfig.__dataclass_fields__)
    assert config.batch_sizes == (int(DEFAULTS["batch_size"]),)


@pytest.mark.parametrize("dest, value, message", [
    ("iterations", 0, "iterations = 0 must be at least 1"),
    ("warmup_iterations", -1, "warmup_iterations = -1 must be 0 or more"),
    ("threads", 2.5, "threads = 2.5 must be a whole number"),
    ("timeout", 0, "timeout = 0 must be a number above 0"),
    ("strict", "yes", "strict = 'yes' must be true or false"),
    ("compile", "jit", "compile = 'jit' is not one of none, inductor"),
    ("output", 5, "output = 5 must be a string"),
])
def test_values_are_checked_by_their_kind(tmp_path, dest, value, message):
    config_file = tmp_path / "bad.yaml"
    config_file.write_text(f"{dest}: {value!r}\n".replace("'", '"'))
    with pytest.raises(UsageError, match=re.escape(f"config {config_file}: {message}")):
        resolve_config({"config": str(config_file)})
    flag = option(dest).flag
    with pytest.raises(UsageError, match=re.escape(f"{flag}: {message}")):
        resolve_config({dest: value})


def test_an_alias_becomes_the_value_it_stands_for():
    assert resolve_config({"normalization_location": "ipu"}).normalization_location == "device"
    assert option("normalization_location").aliases == {"ipu": "device"}


def test_unused_flags_follow_the_devices_of_the_table():
    values = SimpleNamespace(**{**DEFAULTS, "cuda_graphs": True, "num_io_tiles": 32, "channels_last": True,
                                "measure_peak": True, "model_cache_path": "/cache"})
    assert unused_on("cpu", values) == ["num_io_tiles", "cuda_graphs"]
    assert unused_on("cuda", values) == ["num_io_tiles"]  # --measure-peak times the GPU
    assert unused_on("ipu", values) == ["channels_last", "measure_peak", "cuda_graphs"]


def test_a_refusal_is_declared_once_in_the_table_and_enforced_from_it():
    """--scenario on IPU: config.py refuses it for --device ipu, job.py for the IPU --device auto picked; both ask
    the table (its devices and refused_elsewhere), and the default value is never refused."""
    assert [o.dest for o in OPTIONS if o.refused_elsewhere] == ["scenario"]
    server = SimpleNamespace(**{**DEFAULTS, "scenario": "server"})
    for device in ("cpu", "cuda", "auto"):
        refuse(device, server)
    refuse("ipu", SimpleNamespace(**DEFAULTS))
    with pytest.raises(UsageError, match=r"^--scenario server is not served on IPU: an executable runs a fixed "
                                         r"batch per call \(docs/scenarios.md\); use --device cpu or cuda$"):
        refuse("ipu", server)
    with pytest.raises(UsageError, match="^--scenario single-stream is not served on IPU"):
        resolve_config({"scenario": "single-stream", "device": "ipu"})


def test_models_import_from_a_checkout_without_install(tmp_path):
    """PYTHONPATH=<checkout>, nothing installed (how the GPU machine runs): mpirunner.models is the
    checkout's models/ folder. -S keeps the venv's site-packages (and its install of mpirunner) out."""
    script = ("import mpirunner.models.registry as r, mpirunner.models as m; print(m.__file__); "
              "print(r.default_resolution('efficientnet-b4'))")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-S", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    models_file, resolution = result.stdout.split()
    assert models_file == str(REPO / "models" / "__init__.py") and resolution == "380"


def test_models_import_where_the_package_is_installed():
    """The interpreter of the tests (the venv, `pip install -e .`): the same folder, under the same name."""
    import mpirunner.models
    import mpirunner.models.registry

    assert mpirunner.models.__file__ == str(REPO / "models" / "__init__.py")
    assert mpirunner.models.build_model is mpirunner.models.registry.build_model
