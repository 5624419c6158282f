"""Named config + command-line flags -> one validated, frozen RunConfig. Precedence: built-in DEFAULTS < the YAML
config (keys: the options' dest names) < the command line. Pure Python and YAML, so every rank reaches the same
verdict on the same input without talking."""
import dataclasses
import difflib
import os
import re
from pathlib import Path
from typing import Optional, Tuple

from mpirunner.errors import UsageError
from mpirunner.options import (BOOL, BY_DEST, CHOICE, DEFAULTS, NON_NEGATIVE_FLOAT, NON_NEGATIVE_INT,
                               OPTIONAL_POSITIVE_FLOAT, OPTIONAL_POSITIVE_INT, OPTIONS, POSITIVE_FLOAT, POSITIVE_INT,
                               SIZES, TEXT, refuse)

# The named configs: mpirunner/configs/ in an installed copy (setup.py), else the checkout's configs/ folder.
_PACKAGE = Path(__file__).resolve().parent
CONFIG_DIR = _PACKAGE / "configs" if (_PACKAGE / "configs").is_dir() else _PACKAGE.parent / "configs"

# The table's kinds as the types of RunConfig's fields.
_FIELD_TYPES = {POSITIVE_INT: int, NON_NEGATIVE_INT: int, OPTIONAL_POSITIVE_INT: Optional[int],
                POSITIVE_FLOAT: float, OPTIONAL_POSITIVE_FLOAT: Optional[float], NON_NEGATIVE_FLOAT: float, BOOL: bool,
                CHOICE: str, TEXT: Optional[str]}


class _RunConfigMethods:
    @property
    def name(self):
        """Short name of the job: the config's name, else the model's."""
        if self.config:
            return Path(self.config).stem if self.config.endswith((".yaml", ".yml")) else self.config
        return self.model

    @property
    def weights_bits(self):
        return int(self.precision.split(".")[0])

    @property
    def activations_bits(self):
        return int(self.precision.split(".")[1])

    def settings(self):
        """The run's settings as a plain dict (for the HDF5 file and the YAML echo)."""
        return {key: value for key, value in dataclasses.asdict(self).items() if key not in ("config_text", "argv")}

    def is_default(self, dest):
        """Whether setting `dest` has its built-in default (models warn about settings that change nothing)."""
        return getattr(self, dest) == DEFAULTS[dest]


# The option table's settings (--batch-size parsed into batch_sizes), the config's name and text, the command line
# and config_device: the device family the config file declares (`device:`), which `--device auto` keeps.
RunConfig = dataclasses.make_dataclass(
    "RunConfig",
    [("config", Optional[str]), ("config_text", str), ("argv", Tuple[str, ...]), ("batch_sizes", Tuple[int, ...]),
     ("config_device", Optional[str])]
    + [(o.dest, _FIELD_TYPES[o.kind]) for o in OPTIONS if o.is_setting and o.kind != SIZES],
    bases=(_RunConfigMethods,), frozen=True)
RunConfig.__module__ = __name__  # pickles and prints as mpirunner.config.RunConfig
RunConfig.__doc__ = "Everything one job needs, validated once; identical on every rank (fields: options.py)."


_RANGE = re.compile(r"^(\d+)\.\.(\d+)(?:/(\d+))?$")


def parse_batch_sizes(text):
    """'8' | '1,2,4,8' | '1..80' | '8..80/8' (start..stop inclusive, /step) -> tuple of sizes, in order."""
    text = str(text).strip()
    if not text:
        raise UsageError("--batch-size is empty; give a size (8), a list (1,2,4,8) or a range (1..80, 8..80/8)")
    sizes = []
    for part in text.split(","):
        part = part.strip()
        match = _RANGE.match(part)
        if match:
            start, stop, step = int(match[1]), int(match[2]), int(match[3] or 1)
            if start > stop:
                raise UsageError(f"--batch-size range '{part}' runs backwards; write it as {stop}..{start}")
            if step < 1:
                raise UsageError(f"--batch-size range '{part}' has step {step}; the step must be at least 1")
            sizes.extend(range(start, stop + 1, step))
        elif re.fullmatch(r"-?\d+", part):
            sizes.append(int(part))
        else:
            raise UsageError(f"--batch-size '{part}' is not a size; give a size (8), a list (1,2,4,8) "
                             f"or a range (1..80, 8..80/8)")
    bad = [size for size in sizes if size < 1]
    if bad:
        raise UsageError(f"--batch-size {bad[0]} is not allowed; sizes must be at least 1")
    duplicates = sorted({size for size in sizes if sizes.count(size) > 1})
    if duplicates:
        raise UsageError(f"--batch-size lists {duplicates[0]} twice; each size makes one run group")
    return tuple(sizes)


def config_names():
    return sorted(path.stem for path in CONFIG_DIR.glob("*.yaml"))


def describe_configs():
    """One line per named config: its name, model, device, precision and batch size."""
    import yaml

    lines = []
    for name in config_names():
        values = {**DEFAULTS, **(yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text()) or {})}
        shown = ("model", "device", "precision", "batch_size", "device_iterations")
        lines.append(f"{name:24s} " + " ".join(f"{key}={values[key]}" for key in shown))
    return "\n".join(lines)


def _suggest(name, choices):
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.4)
    return f"; did you mean {', '.join(close)}?" if close else ""


def load_config_file(name_or_path):
    """A named config or a YAML path -> (dict of settings, YAML text, path)."""
    import yaml

    path = Path(name_or_path)
    if not (name_or_path.endswith((".yaml", ".yml")) or path.is_file()):
        path = CONFIG_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise UsageError(f"unknown config '{name_or_path}'{_suggest(name_or_path, config_names())} "
                             f"(valid: {', '.join(config_names())}, or a path to a YAML file)")
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(f"config file {path} is not UTF-8 text (byte {error.start}: {error.reason}); "
                         "give a YAML file of flag names and values") from None
    except OSError as error:
        raise UsageError(f"cannot read config file {path}: {error.strerror or error}") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UsageError(f"config file {path} is not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise UsageError(f"config file {path} must be a mapping of flag names to values")
    for key in values:
        if key not in BY_DEST or not BY_DEST[key].is_setting:
            valid = [o.dest for o in OPTIONS if o.is_setting]
            raise UsageError(f"config file {path}: unknown key '{key}'{_suggest(str(key), valid)}")
    return values, text, path


def _check_types(values, origin):
    """Each setting against its kind in the option table (the same rules for flags and YAML values)."""
    for option in OPTIONS:
        if option.is_setting and option.kind != SIZES:
            problem = option.problem(values[option.dest])
            if problem:
                raise UsageError(f"{origin(option.dest)}: {option.dest} = {values[option.dest]!r} {problem}")


def _check_combinations(values):
    """Flag combinations that cannot work, decided before any rank does anything."""
    if values["eight_bit_io"] and values["normalization_location"] == "none":
        raise UsageError("--eight-bit-io with --normalization-location none would feed raw bytes to the network; "
                         "use --normalization-location device (or host)")
    if values["data"] == "real" and not values["data_path"]:
        raise UsageError("--data real needs --data-path DIR (a folder of images, or of class folders of images)")
    if values["data_path"] and values["data"] != "real":
        raise UsageError(f"--data-path is only used with --data real (this run uses --data {values['data']})")
    if values["data"] == "real":
        _check_image_folder(values["data_path"])
    if values["weights"] and values["weights"] != "torchvision" and not os.path.isfile(values["weights"]):
        raise UsageError(f"--weights {values['weights']} does not exist")
    if values["until_stable"] and values["min_duration"]:
        raise UsageError("--until-stable and --min-duration are two stop rules; choose one")
    if values["cuda_graphs"] and values["device"] in ("cpu", "ipu"):
        raise UsageError(f"--cuda-graphs needs --device cuda or auto (this run uses --device {values['device']})")
    if values["compile_only"] and values["device"] not in ("auto", "ipu"):
        raise UsageError("--compile-only builds an IPU executable cache; it needs --device ipu")
    if values["offline_target_ipu_version"] is not None and not values["compile_only"]:
        raise UsageError("--offline-target-ipu-version is only used with --compile-only")
    if values["progress"] and values["no_progress"]:
        raise UsageError("--progress and --no-progress contradict each other; drop one of them")
    if values["resume"] and values["overwrite"]:
        raise UsageError("--resume continues the output file and --overwrite replaces it; choose one")
    if values["cpus_per_rank"] and values["numa_aware"] == "no":
        raise UsageError("--cpus-per-rank sets the pinning, which --numa-aware no turns off; drop one of them")


def _check_scenario(values, batch_sizes):
    """Load scenarios (docs/scenarios.md): what each needs; --find-peak-qps implies server."""
    if values["find_peak_qps"]:
        if values["scenario"] not in ("offline", "server"):
            raise UsageError(f"--find-peak-qps runs server points; it cannot run with --scenario {values['scenario']}")
        values["scenario"] = "server"
        if values["latency_bound"] is None:
            raise UsageError("--find-peak-qps needs --latency-bound MS (the bound the --percentile must stay within)")
    scenario = values["scenario"]
    if values["percentile"] >= 100:
        raise UsageError(f"--percentile {values['percentile']:g} must be below 100")
    refuse(values["device"], values)  # the option table's refusals (--scenario on IPU)
    if scenario != "offline" and values["device_iterations"] != 1:
        raise UsageError(f"--scenario {scenario} hands one query batch per step; drop --device-iterations")
    if scenario == "single-stream" and len(batch_sizes) > 1:
        raise UsageError("--scenario single-stream sends queries of --query-size samples; drop the --batch-size list")
    if scenario != "server":
        for dest in ("target_qps", "latency_bound"):
            if values[dest] is not None:
                raise UsageError(f"{BY_DEST[dest].flag} is only used with --scenario server")
        return
    if len(batch_sizes) > 1:
        raise UsageError(f"--scenario server takes one --batch-size (the largest batch it may form), "
                         f"not a list of {len(batch_sizes)}")
    if values["target_qps"] is None and not values["find_peak_qps"]:
        raise UsageError("--scenario server needs --target-qps QPS (queries per second in total)")
    if values["min_duration"] is None:
        if not values["find_peak_qps"]:
            raise UsageError("--scenario server needs --min-duration SECONDS (how long queries are issued)")
        values["min_duration"] = 0.0  # a peak search sizes each point by its --percentile alone
    if values["query_size"] != 1:
        raise UsageError("--query-size is for single-stream; server queries hold one sample each")


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def _check_image_folder(path):
    folder = Path(path)
    if not folder.is_dir():
        raise UsageError(f"--data-path {path} is not a directory")
    if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.rglob("*") if p.is_file()):
        raise UsageError(f"--data-path {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")


def resolve_config(given, argv=()):
    """Layer defaults < config file < command line and validate; raise UsageError on bad input."""
    name = given.get("config")
    file_values, config_text, config_path = load_config_file(name) if name else ({}, "", None)
    values = {**DEFAULTS, **file_values,
              **{key: value for key, value in given.items() if key not in BY_DEST or BY_DEST[key].is_setting}}

    def origin(key):
        if key in given:
            return BY_DEST[key].flag
        if key in file_values:
            return f"config {config_path}"
        return "default"

    _check_types(values, origin)
    batch_sizes = parse_batch_sizes(values.pop("batch_size"))
    _check_combinations(values)
    _check_scenario(values, batch_sizes)
    values.update({o.dest: o.aliases.get(values[o.dest], values[o.dest]) for o in OPTIONS if o.aliases})
    values["config"] = name
    config_device = file_values.get("device")
    return RunConfig(config_text=config_text, argv=tuple(argv), batch_sizes=batch_sizes,
                     config_device=None if config_device == "auto" else config_device, **values)
