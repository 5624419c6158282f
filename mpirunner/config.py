"""Named config + command-line flags -> one validated, frozen RunConfig.

Precedence: built-in DEFAULTS < the YAML config < flags given on the command line.
Config keys are the flags' dest names (`batch_size`, `eight_bit_io`, ...). Everything here is
pure Python and YAML, so every rank reaches the same verdict on the same input without talking.
"""
import dataclasses
import difflib
import os
import re
from pathlib import Path
from typing import Optional, Tuple

from mpirunner.errors import UsageError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

DEFAULTS = {
    "config": None,
    "model": "resnet50",
    "data": "generated",
    "batch_size": "1",
    "iterations": 20,
    "device_iterations": 1,
    "replicas": 1,
    "precision": "32.32",
    "half_partial": False,
    "eight_bit_io": False,
    "normalization_location": "host",
    "norm_type": "batch",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "num_io_tiles": 0,
    "efficientnet_group_dim": 1,
    "efficientnet_expand_ratio": 6,
    "random_weights": False,
    "model_cache_path": None,
    "device": "auto",
    "image_size": None,
    "data_path": None,
    "input_pool_mib": 1024,
    "half_dtype": None,
    "weights": None,
    "check_outputs": False,
    "channels_last": False,
    "compile": "none",
    "measure_peak": False,
    "seed": 0,
    "numa_aware": "yes",
    "threads": None,
    "cpus_per_rank": None,
    "warmup_iterations": 2,
    "min_iterations": 10,
    "min_duration": None,
    "max_cv": 10.0,
    "until_stable": False,
    "stability_percentage": 10.0,
    "max_windows": 10,
    "strict": False,
    "timeout": None,
    "exchange_memory_target": "cycles",
    "min_latency": False,
    "compile_only": False,
    "offline_target_ipu_version": None,
    "cuda_graphs": False,
    "allow_gpu_sharing": False,
    "output": None,
    "overwrite": False,
    "no_progress": False,
    "log_level": "info",
}

CHOICES = {
    "data": ("generated", "synthetic", "real"),
    "precision": ("32.32", "16.16", "16.32"),
    "normalization_location": ("host", "device", "ipu", "none"),
    "norm_type": ("batch", "group", "none"),
    "device": ("auto", "cpu", "cuda", "ipu"),
    "half_dtype": (None, "float16", "bfloat16"),
    "compile": ("none", "inductor"),
    "numa_aware": ("yes", "no"),
    "exchange_memory_target": ("cycles", "balanced", "memory"),
    "log_level": ("debug", "info", "warning", "error"),
}

POSITIVE_INTS = ("iterations", "device_iterations", "replicas", "norm_num_groups", "efficientnet_group_dim",
                 "efficientnet_expand_ratio", "min_iterations", "max_windows", "input_pool_mib")
NON_NEGATIVE_INTS = ("num_io_tiles", "warmup_iterations", "seed")
OPTIONAL_POSITIVE_INTS = ("image_size", "threads", "cpus_per_rank", "offline_target_ipu_version")
OPTIONAL_POSITIVE_FLOATS = ("min_duration", "timeout")
POSITIVE_FLOATS = ("norm_eps", "max_cv", "stability_percentage")
BOOLS = ("half_partial", "eight_bit_io", "random_weights", "check_outputs", "channels_last", "measure_peak",
         "until_stable", "strict", "min_latency", "compile_only", "cuda_graphs", "allow_gpu_sharing",
         "overwrite", "no_progress")
# Keys of the command line that are actions, not settings of a run.
NOT_SETTINGS = ("config", "list_configs")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one job needs, validated once; identical on every rank."""

    config: Optional[str]
    config_text: str
    argv: Tuple[str, ...]
    batch_sizes: Tuple[int, ...]
    model: str
    data: str
    iterations: int
    device_iterations: int
    replicas: int
    precision: str
    half_partial: bool
    eight_bit_io: bool
    normalization_location: str
    norm_type: str
    norm_num_groups: int
    norm_eps: float
    num_io_tiles: int
    efficientnet_group_dim: int
    efficientnet_expand_ratio: int
    random_weights: bool
    model_cache_path: Optional[str]
    device: str
    image_size: Optional[int]
    data_path: Optional[str]
    input_pool_mib: int
    half_dtype: Optional[str]
    weights: Optional[str]
    check_outputs: bool
    channels_last: bool
    compile: str
    measure_peak: bool
    seed: int
    numa_aware: str
    threads: Optional[int]
    cpus_per_rank: Optional[int]
    warmup_iterations: int
    min_iterations: int
    min_duration: Optional[float]
    max_cv: float
    until_stable: bool
    stability_percentage: float
    max_windows: int
    strict: bool
    timeout: Optional[float]
    exchange_memory_target: str
    min_latency: bool
    compile_only: bool
    offline_target_ipu_version: Optional[int]
    cuda_graphs: bool
    allow_gpu_sharing: bool
    output: Optional[str]
    overwrite: bool
    no_progress: bool
    log_level: str

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
        skip = {"config_text", "argv"}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}


# ---------------------------------------------------------------- batch sizes

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


# ---------------------------------------------------------------- named configs

def config_names():
    return sorted(path.stem for path in CONFIG_DIR.glob("*.yaml"))


def describe_configs():
    """One line per named config: its name, model, device, precision and batch size."""
    import yaml

    lines = []
    for name in config_names():
        values = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text()) or {}
        lines.append(f"{name:24s} model={values.get('model', DEFAULTS['model'])} "
                     f"device={values.get('device', DEFAULTS['device'])} "
                     f"precision={values.get('precision', DEFAULTS['precision'])} "
                     f"batch_size={values.get('batch_size', DEFAULTS['batch_size'])} "
                     f"device_iterations={values.get('device_iterations', DEFAULTS['device_iterations'])}")
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
    text = path.read_text()
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UsageError(f"config file {path} is not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise UsageError(f"config file {path} must be a mapping of flag names to values")
    for key in values:
        if key not in DEFAULTS or key in NOT_SETTINGS:
            valid = [k for k in DEFAULTS if k not in NOT_SETTINGS]
            raise UsageError(f"config file {path}: unknown key '{key}'{_suggest(str(key), valid)}")
    return values, text, path


# ---------------------------------------------------------------- validation

def _check_types(values, origin):
    def fail(key, what):
        raise UsageError(f"{origin(key)}: {key} = {values[key]!r} {what}")

    for key in POSITIVE_INTS + NON_NEGATIVE_INTS + OPTIONAL_POSITIVE_INTS:
        value = values[key]
        if value is None and key in OPTIONAL_POSITIVE_INTS:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            fail(key, "must be a whole number")
        if key in NON_NEGATIVE_INTS and value < 0:
            fail(key, "must be 0 or more")
        if key not in NON_NEGATIVE_INTS and value < 1:
            fail(key, "must be at least 1")
    for key in POSITIVE_FLOATS + OPTIONAL_POSITIVE_FLOATS:
        value = values[key]
        if value is None and key in OPTIONAL_POSITIVE_FLOATS:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            fail(key, "must be a number above 0")
    for key in BOOLS:
        if not isinstance(values[key], bool):
            fail(key, "must be true or false")
    for key, choices in CHOICES.items():
        if values[key] not in choices:
            fail(key, f"is not one of {', '.join(str(c) for c in choices if c is not None)}")
    for key in ("model", "data_path", "weights", "output", "model_cache_path"):
        if values[key] is not None and not isinstance(values[key], str):
            fail(key, "must be a string")


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
    if values["weights"] and not os.path.isfile(values["weights"]):
        raise UsageError(f"--weights {values['weights']} does not exist")
    if values["until_stable"] and values["min_duration"]:
        raise UsageError("--until-stable and --min-duration are two stop rules; choose one")
    if values["cuda_graphs"] and values["device"] in ("cpu", "ipu"):
        raise UsageError(f"--cuda-graphs needs --device cuda or auto (this run uses --device {values['device']})")
    if values["compile_only"] and values["device"] not in ("auto", "ipu"):
        raise UsageError("--compile-only builds an IPU executable cache; it needs --device ipu")
    if values["offline_target_ipu_version"] is not None and not values["compile_only"]:
        raise UsageError("--offline-target-ipu-version is only used with --compile-only")
    if values["cpus_per_rank"] and values["numa_aware"] == "no":
        raise UsageError("--cpus-per-rank sets the pinning, which --numa-aware no turns off; drop one of them")


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def _check_image_folder(path):
    folder = Path(path)
    if not folder.is_dir():
        raise UsageError(f"--data-path {path} is not a directory")
    if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.rglob("*") if p.is_file()):
        raise UsageError(f"--data-path {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")


def resolve_config(given, argv=()):
    """Layer defaults < config file < command line and validate; raise UsageError on bad input."""
    values = dict(DEFAULTS)
    config_text = ""
    config_path = None
    name = given.get("config")
    if name:
        file_values, config_text, config_path = load_config_file(name)
        values.update(file_values)
    for key, value in given.items():
        if key not in NOT_SETTINGS:
            values[key] = value

    def origin(key):
        if key in given:
            return "--" + key.replace("_", "-")
        if config_path is not None and key in (file_values if name else {}):
            return f"config {config_path}"
        return "default"

    _check_types(values, origin)
    batch_sizes = parse_batch_sizes(values.pop("batch_size"))
    _check_combinations(values)
    if values["normalization_location"] == "ipu":
        values["normalization_location"] = "device"
    values["config"] = name
    return RunConfig(config_text=config_text, argv=tuple(argv), batch_sizes=batch_sizes, **values)
