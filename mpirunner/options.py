"""Every flag of the runner and of mpirunner-report, declared once: name, value kind, default, help, devices.
The parsers, RunConfig's fields, value checks, per-device warnings and refusals and docs/flags.md
(`python -m mpirunner.options > docs/flags.md`) derive from it. Pure Python: importing this costs nothing."""
from collections import namedtuple
from dataclasses import dataclass, field
from typing import Optional, Tuple

DEVICES = ("cpu", "cuda", "ipu")
ALL_DEVICES = frozenset(DEVICES)

# Value kinds: how a value is parsed on the command line and what a valid one is (in a YAML config too).
POSITIVE_INT = "positive int"                    # whole number >= 1
NON_NEGATIVE_INT = "non-negative int"            # whole number >= 0
OPTIONAL_POSITIVE_INT = "optional positive int"  # unset (None) or >= 1
POSITIVE_FLOAT = "positive float"                # number > 0
OPTIONAL_POSITIVE_FLOAT = "optional positive float"
NON_NEGATIVE_FLOAT = "non-negative float"        # number >= 0
BOOL = "bool"                                    # a switch: the flag sets it to true
CHOICE = "choice"                                # one of `choices` (None too when the default is None)
TEXT = "text"                                    # a string (a name or a path), None when unset
SIZES = "sizes"                                  # --batch-size: '8', '1,2,4', '1..80', '8..80/8' (config.py parses)
CONFIG = "config"                                # --config: a name or a path, not a key of a config file
ACTION = "action"                                # does something and exits; not a setting of a run
VERSION = "version"                              # --version: prints the version and exits

INT_KINDS = (POSITIVE_INT, NON_NEGATIVE_INT, OPTIONAL_POSITIVE_INT)
FLOAT_KINDS = (POSITIVE_FLOAT, OPTIONAL_POSITIVE_FLOAT, NON_NEGATIVE_FLOAT)
NOT_SETTINGS = (CONFIG, ACTION, VERSION)  # kinds that are not keys of a YAML config

TOP = None  # the parser's own group (options)
WHAT = "what to run (reference run_benchmark.py flags)"
DEVICE = "device, inputs and numerics"
PLACEMENT = "placement"
MEASUREMENT = "measurement and validity"
SCENARIO = "load scenarios (docs/scenarios.md)"
IPU = "IPU (poptorch)"
CUDA = "CUDA"
OUTPUT = "output"


@dataclass(frozen=True)
class Option:
    """One flag. `devices`: the device families that use it (the others warn when it is set, or refuse a value
    other than the default with `refused_elsewhere`, the reason that follows "FLAG VALUE")."""

    flag: str
    kind: str
    default: object
    group: Optional[str]
    help: str
    choices: Tuple = ()
    aliases: dict = field(default_factory=dict)  # accepted value -> the value it stands for
    devices: frozenset = ALL_DEVICES
    metavar: Optional[str] = None
    negatable: bool = False  # BOOL with a --no-... form
    refused_elsewhere: str = ""

    @property
    def dest(self):
        return self.flag[2:].replace("-", "_")

    @property
    def is_setting(self):
        """Whether it is a key of the run's settings (RunConfig field, YAML config key)."""
        return self.kind not in NOT_SETTINGS

    @property
    def help_text(self):
        """The help, with the built-in default appended where there is one worth showing."""
        shown = self.default not in (None, False) and self.kind not in NOT_SETTINGS
        return self.help + (f" (default: {self.default})" if shown else "")

    def problem(self, value):
        """What is wrong with `value` for this option (for '<origin>: <dest> = <value> <problem>'), or None."""
        if self.kind in INT_KINDS + FLOAT_KINDS:
            whole = self.kind in INT_KINDS
            if value is None and self.kind in (OPTIONAL_POSITIVE_INT, OPTIONAL_POSITIVE_FLOAT):
                return None
            if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
                return "must be a whole number" if whole else "must be a number"
            if self.kind in (NON_NEGATIVE_INT, NON_NEGATIVE_FLOAT):
                return "must be 0 or more" if value < 0 else None
            if whole:
                return "must be at least 1" if value < 1 else None
            return "must be a number above 0" if value <= 0 else None
        if self.kind == BOOL:
            return None if isinstance(value, bool) else "must be true or false"
        if self.kind == CHOICE:
            allowed = self.choices + ((None,) if self.default is None else ())
            return None if value in allowed else f"is not one of {', '.join(map(str, self.choices))}"
        if self.kind == TEXT:
            return None if value is None or isinstance(value, str) else "must be a string"
        return None


def _only(*devices):
    return frozenset(devices)


OPTIONS = (
    Option("--version", VERSION, None, TOP, "show program's version number and exit"),
    Option("--list-configs", ACTION, False, TOP, "list the named configs and exit"),
    Option("--log-level", CHOICE, "info", TOP, "log verbosity", choices=("debug", "info", "warning", "error")),

    Option("--config", CONFIG, None, WHAT, "a named config (see --list-configs) or a path to a YAML file"),
    Option("--model", TEXT, "resnet50", WHAT,
           "model name: resnet50, resnext101, efficientnet-b0..b7 or any torchvision classification model"),
    Option("--data", CHOICE, "generated", WHAT,
           "input source: generated = random batches made before timing, copied host->device in every "
           "step (host IO counted); synthetic = one batch placed on the device once (no host IO); "
           "real = --data-path images decoded and staged before timing, copied in every step; "
           "see docs/input-path.md", choices=("generated", "synthetic", "real")),
    Option("--batch-size", SIZES, "1", WHAT,
           "micro-batch size: one size (8), a list (1,2,4,8), a range (1..80) or a stepped range (8..80/8); "
           "several sizes make a sweep, one run group each", metavar="SIZES"),
    Option("--iterations", POSITIVE_INT, 20, WHAT, "timed steps per run"),
    Option("--device-iterations", POSITIVE_INT, 1, WHAT, "micro-batches per step (IPU: poptorch deviceIterations)"),
    Option("--replicas", POSITIVE_INT, 1, WHAT, "replicas per instance (IPU replication factor)", devices=_only("ipu")),
    Option("--precision", CHOICE, "32.32", WHAT, "weights.activations precision", choices=("32.32", "16.16", "16.32")),
    Option("--half-partial", BOOL, False, WHAT, "half-precision partials/accumulation where the device has it",
           devices=_only("cuda", "ipu")),
    Option("--eight-bit-io", BOOL, False, WHAT, "inputs travel as uint8; the model normalises on the device"),
    Option("--normalization-location", CHOICE, "host", WHAT,
           "where inputs are normalised ('ipu' is an alias of 'device')",
           choices=("host", "device", "ipu", "none"), aliases={"ipu": "device"}),
    Option("--norm-type", CHOICE, "batch", WHAT, "normalisation layers of the model",
           choices=("batch", "group", "none")),
    Option("--norm-num-groups", POSITIVE_INT, 32, WHAT, "groups for --norm-type group"),
    Option("--norm-eps", POSITIVE_FLOAT, 1e-5, WHAT, "epsilon of the norm layers"),
    Option("--num-io-tiles", NON_NEGATIVE_INT, 0, WHAT, "IPU tiles reserved for IO overlap (0: none)",
           devices=_only("ipu")),
    Option("--efficientnet-group-dim", POSITIVE_INT, 1, WHAT,
           "channels per group of EfficientNet depthwise convs (1: depthwise; 16: the G16 variants)"),
    Option("--efficientnet-expand-ratio", POSITIVE_INT, 6, WHAT, "expansion ratio of EfficientNet MBConv blocks"),
    Option("--random-weights", BOOL, False, WHAT,
           "random weights (always the case unless --weights; accepted for compatibility)"),
    Option("--model-cache-path", TEXT, None, WHAT, "cache for compiled executables / compiled graphs", metavar="DIR"),

    Option("--device", CHOICE, "auto", DEVICE, "device family; auto picks ipu > cuda > cpu",
           choices=("auto", "cpu", "cuda", "ipu")),
    Option("--image-size", OPTIONAL_POSITIVE_INT, None, DEVICE, "input resolution (default: the model's own)"),
    Option("--data-path", TEXT, None, DEVICE, "image folder for --data real (class folders or flat)", metavar="DIR"),
    Option("--input-pool-mib", POSITIVE_INT, 1024, DEVICE,
           "host memory per rank for the inputs made before timing: generated data keeps at most 4 "
           "distinct steps, real data a ring of staged steps, within this bound (always at least "
           "one step)", metavar="MIB"),
    Option("--half-dtype", CHOICE, None, DEVICE, "16-bit type (default: the device's native one)",
           choices=("float16", "bfloat16")),
    Option("--weights", TEXT, None, DEVICE, "load a state_dict (strict) instead of seeded random weights; "
           "'torchvision': the model's standard torchvision weights from the local torch hub cache (never "
           "downloaded)", metavar="FILE"),
    Option("--check-outputs", BOOL, False, DEVICE,
           "after the timed steps, compare one batch against a float32 eager reference; disagreement makes the "
           "run invalid"),
    Option("--channels-last", BOOL, False, DEVICE, "channels_last memory format on CPU/CUDA",
           devices=_only("cpu", "cuda"), negatable=True),
    Option("--compile", CHOICE, "none", DEVICE, "torch.compile the model (CPU/CUDA)", choices=("none", "inductor"),
           devices=_only("cpu", "cuda")),
    Option("--measure-peak", BOOL, False, DEVICE, "measure each rank's GEMM peak and memory bandwidth (its CPUs "
           "or its GPU) and store the utilisation of the roof that binds", devices=_only("cpu", "cuda")),
    Option("--seed", NON_NEGATIVE_INT, 0, DEVICE, "seed of weights and generated data (same on every rank)"),

    Option("--numa-aware", CHOICE, "yes", PLACEMENT, "pin each rank to its NUMA node's CPUs and memory",
           choices=("yes", "no")),
    Option("--threads", OPTIONAL_POSITIVE_INT, None, PLACEMENT,
           "compute threads per rank (default: the rank's CPU share)"),
    Option("--cpus-per-rank", OPTIONAL_POSITIVE_INT, None, PLACEMENT,
           "CPUs given to each rank (default: an equal share of its node)"),

    Option("--warmup-iterations", NON_NEGATIVE_INT, 2, MEASUREMENT, "untimed steps before timing"),
    Option("--min-iterations", POSITIVE_INT, 10, MEASUREMENT, "fewer timed steps make a run invalid"),
    Option("--min-duration", OPTIONAL_POSITIVE_FLOAT, None, MEASUREMENT,
           "extend a run with more steps until it lasts this long", metavar="SECONDS"),
    Option("--max-cv", POSITIVE_FLOAT, 10.0, MEASUREMENT,
           "coefficient of variation of step times above this is unstable", metavar="PERCENT"),
    Option("--until-stable", BOOL, False, MEASUREMENT,
           "measure windows of --iterations steps until three agree within --stability-percentage"),
    Option("--stability-percentage", POSITIVE_FLOAT, 10.0, MEASUREMENT, "agreement of stable windows"),
    Option("--max-windows", POSITIVE_INT, 10, MEASUREMENT, "most windows --until-stable measures"),
    Option("--strict", BOOL, False, MEASUREMENT, "exit with status 3 when a run is invalid"),
    Option("--timeout", OPTIONAL_POSITIVE_FLOAT, None, MEASUREMENT,
           "abort the job when a run takes longer than this on any rank", metavar="SECONDS"),

    Option("--scenario", CHOICE, "offline", SCENARIO,
           "offline = steps back to back; single-stream = one query at a time; server = queries on a seeded "
           "Poisson schedule, batched while they wait", choices=("offline", "single-stream", "server"),
           devices=_only("cpu", "cuda"),
           refused_elsewhere="is not served on IPU: an executable runs a fixed batch per call (docs/scenarios.md)"),
    Option("--query-size", POSITIVE_INT, 1, SCENARIO, "samples per single-stream query", devices=_only("cpu", "cuda")),
    Option("--target-qps", OPTIONAL_POSITIVE_FLOAT, None, SCENARIO,
           "server: queries per second offered in total, each rank an equal share", metavar="QPS",
           devices=_only("cpu", "cuda")),
    Option("--max-batch-wait-ms", NON_NEGATIVE_FLOAT, 0.0, SCENARIO,
           "server: how long the oldest waiting query may wait for more to fill a batch", metavar="MS",
           devices=_only("cpu", "cuda")),
    Option("--find-peak-qps", BOOL, False, SCENARIO,
           "server runs at several loads: the highest total QPS whose --percentile stays within --latency-bound",
           devices=_only("cpu", "cuda")),
    Option("--latency-bound", OPTIONAL_POSITIVE_FLOAT, None, SCENARIO,
           "server: query latency bound; the --percentile over it makes a run invalid", metavar="MS",
           devices=_only("cpu", "cuda")),
    Option("--percentile", POSITIVE_FLOAT, 99.0, SCENARIO, "the query latency percentile held to --latency-bound",
           devices=_only("cpu", "cuda")),

    Option("--exchange-memory-target", CHOICE, "cycles", IPU, "poplar internal exchange optimisation target",
           choices=("cycles", "balanced", "memory"), devices=_only("ipu")),
    Option("--min-latency", BOOL, False, IPU,
           "favour latency over throughput (IPU: no exchange prefetch; CUDA: no IO overlap)",
           devices=_only("cuda", "ipu")),
    Option("--enable-fast-groupnorm", BOOL, False, IPU,
           "PopART groupNormStridedChannelGrouping: the faster group norm, as the reference's fast configs "
           "(cannot load weights trained without it)", devices=_only("ipu")),
    Option("--compile-only", BOOL, False, IPU, "compile (and cache) the executable, then exit", devices=_only("ipu")),
    Option("--offline-target-ipu-version", OPTIONAL_POSITIVE_INT, None, IPU,
           "IPU version to compile for without hardware", devices=_only("ipu")),

    Option("--cuda-graphs", BOOL, False, CUDA, "capture each step as a CUDA graph and replay it",
           devices=_only("cuda")),
    Option("--allow-gpu-sharing", BOOL, False, CUDA, "allow more local ranks than visible GPUs", devices=_only("cuda")),

    Option("--output", TEXT, None, OUTPUT, "HDF5 file to write (default: results/<config or model>-<UTC time>.h5)",
           metavar="PATH"),
    Option("--overwrite", BOOL, False, OUTPUT, "replace an existing output file"),
    Option("--resume", BOOL, False, OUTPUT, "continue the sweep in an existing output file (skip the sizes it holds; "
           "starts it when missing)"),
    Option("--progress", BOOL, False, OUTPUT,
           "draw the progress bar even when stderr is not a terminal (by default it is drawn only on a terminal)"),
    Option("--no-progress", BOOL, False, OUTPUT, "no progress bar, even on a terminal"),
)

BY_DEST = {option.dest: option for option in OPTIONS}
# The settings of a run with their built-in defaults (config and batch_size included; actions not).
DEFAULTS = {option.dest: option.default for option in OPTIONS if option.kind not in (ACTION, VERSION)}


def option(dest):
    return BY_DEST[dest]


def unused_on(device, values):
    """dests of the options set (to a non-default value) in `values` that device family `device` does not use."""
    return [o.dest for o in OPTIONS if device not in o.devices and getattr(values, o.dest, o.default) != o.default]


def refuse(device, values):
    """Raise UsageError when `values` (a RunConfig, or a dict of settings) set an option that device family
    `device` refuses (its `refused_elsewhere`) to a value other than its default; 'auto' is no family yet."""
    from mpirunner.errors import UsageError

    for o in OPTIONS:
        value = values.get(o.dest, o.default) if isinstance(values, dict) else getattr(values, o.dest, o.default)
        if o.refused_elsewhere and device in DEVICES and device not in o.devices and value != o.default:
            raise UsageError(f"{o.flag} {value} {o.refused_elsewhere}; use --device "
                             + " or ".join(d for d in DEVICES if d in o.devices))


def _cell(text):
    return str(text).replace("|", "\\|")


def _value(o):
    """The value column of a runner flag or a report argument (an Option or a ReportFlag)."""
    if o.kind == CHOICE:
        return " \\| ".join(f"`{choice}`" for choice in o.choices)
    if o.kind in (BOOL, ACTION, VERSION) or not o.flag.startswith("-"):
        return ""
    return o.metavar or {POSITIVE_INT: "int >= 1", NON_NEGATIVE_INT: "int >= 0", OPTIONAL_POSITIVE_INT: "int >= 1",
                         POSITIVE_FLOAT: "number > 0", OPTIONAL_POSITIVE_FLOAT: "number > 0",
                         NON_NEGATIVE_FLOAT: "number >= 0", TEXT: "text", CONFIG: "NAME or PATH", SIZES: "SIZES",
                         INT: "int", PERCENT: "PERCENT"}[o.kind]


def flags_markdown():
    """The flags page: one table per group, in the order of `--help`."""
    lines = [
        "# Flags",
        "",
        "Generated from the option table in `mpirunner/options.py` by `python -m mpirunner.options > docs/flags.md`;",
        "`tests/test_options.py` fails when this page and the table (or `--help`) differ.",
        "",
        "Every setting can also be given as a key of a YAML config (`--config`), spelled as in the",
        "*config key* column. Precedence: built-in default < config < command line. *Devices* names",
        "the device families that use a flag; set on another one, the run logs that it is ignored",
        "(or, marked *refused elsewhere*, refuses a value other than the default: exit status 2 before anything runs).",
        "`-h`, `--help` prints the same list.",
    ]
    for group in dict.fromkeys(o.group for o in OPTIONS):  # in the table's order, as --help
        lines += ["", f"## {group or 'general'}", "",
                  "| flag | value | default | config key | devices | meaning |",
                  "|---|---|---|---|---|---|"]
        for o in [o for o in OPTIONS if o.group == group]:
            flag = f"`{o.flag}`" + (f", `--no-{o.flag[2:]}`" if o.negatable else "")
            default = "" if o.default is None or o.kind in (ACTION, VERSION) else f"`{o.default}`"
            key = f"`{o.dest}`" if o.is_setting else ""
            devices = "all" if o.devices == ALL_DEVICES else ", ".join(d for d in DEVICES if d in o.devices)
            devices += " (refused elsewhere)" if o.refused_elsewhere else ""
            lines.append(f"| {flag} | {_value(o)} | {default} | {key} | {devices} | {_cell(o.help)} |")
    return "\n".join(lines + report_markdown()) + "\n"


# The report's kinds besides BOOL, CHOICE, TEXT and SIZES (the runner's --batch-size grammar, config.py parses):
PERCENT, INT, PATHS, REPEATED = "percent", "int", "paths", "repeated"  # >= 0; whole; positional; once per value
NOISE_FLOOR_PERCENT = 10.0  # one run per side: the smallest change that counts (docs/methodology-and-validity.md)
SORT_NAMES = ("model", "precision", "device", "world-size", "batch-size", "throughput", "p50", "p99", "created",
              "commit", "file", "valid")
DEFAULT_SORT = ("model", "precision", "device", "world-size", "batch-size", "created", "file")


# One word of `mpirunner-report COMMAND`: a flag, or a positional when `flag` has no leading dashes (nargs '+' or '*').
ReportFlag = namedtuple("ReportFlag", "command flag kind help default metavar choices nargs",
                        defaults=(None, None, (), None))


REPORT_FLAGS = (  # metavar: PERCENT and SIZES when not given
    ReportFlag("report", "files", PATHS, "mpirunner HDF5 result files", metavar="FILE", nargs="+"),
    ReportFlag("report", "--ranks", BOOL,
               "a row per rank (host, NUMA node, cpus, throughput, median latency); per-rank colours in --plot"),
    ReportFlag("report", "--histogram", BOOL, "draw each run's latency histogram in the terminal (log bins)"),
    ReportFlag("report", "--plot", TEXT, "write a PNG: one run -> latency histogram; a sweep -> throughput vs batch "
               "size and vs p99 latency", metavar="PATH.png"),
    ReportFlag("report", "--csv", TEXT, "one row per run with every summary field ('-': stdout)", metavar="PATH"),
    ReportFlag("report", "--json", TEXT, "the same rows as a JSON list ('-': stdout)", metavar="PATH"),
    ReportFlag("report", "--batch-size", SIZES, "only the runs of these batch sizes, written as the runner's "
               "--batch-size (8, 1,2,4, 1..80, 8..80/8; e.g. one histogram or --plot of a sweep)"),
    ReportFlag("compare", "files", PATHS, "one file per side", metavar="BASE.h5 NEW.h5", nargs="*"),
    ReportFlag("compare", "--base", PATHS, "BASE as a group of reruns (with --new)", metavar="FILE", nargs="+"),
    ReportFlag("compare", "--new", PATHS, "NEW as a group of reruns (with --base)", metavar="FILE", nargs="+"),
    ReportFlag("compare", "--threshold", PERCENT, "slow-down that counts as a regression (default: 5)", 5.0),
    ReportFlag("compare", "--noise-floor", PERCENT, "with one file per side, the smallest change that can count: the "
               f"run-to-run noise no single pair measures (default: {NOISE_FLOOR_PERCENT:g})", NOISE_FLOOR_PERCENT),
    ReportFlag("compare", "--include-invalid", BOOL,
               "judge pairs with an INVALID run too (they are left out by default)"),
    ReportFlag("compare", "--seed", INT, "seed of the bootstrap resampling (default: 0)", 0),
    ReportFlag("compare", "--json", TEXT, "one row per batch size: the verdict, what decided it and its numbers, as "
               "a JSON list ('-': stdout, the table left out)", metavar="PATH"),
    ReportFlag("summary", "paths", PATHS, "result files or folders", metavar="PATH", nargs="+"),
    ReportFlag("summary", "--model", REPEATED, "only these models (repeatable)", metavar="GLOB"),
    ReportFlag("summary", "--device", REPEATED, "only this backend (cpu, cuda, ipu) or device name (part or glob; "
               "repeatable)", metavar="TEXT"),
    ReportFlag("summary", "--batch-size", SIZES, "only these batch sizes, written as the runner's --batch-size "
               "(8, 1,2,4, 1..80, 8..80/8)"),
    ReportFlag("summary", "--valid-only", BOOL, "leave INVALID runs out"),
    ReportFlag("summary", "--sort", TEXT, f"sort by {', '.join(SORT_NAMES)}; '--sort=-KEY' descending "
               f"(default: {','.join(DEFAULT_SORT)})", metavar="KEY[,KEY...]"),
    ReportFlag("summary", "--by", CHOICE, "trends: each configuration's runs in this order, each step judged against "
               "the earlier valid ones with compare's rule", choices=("commit", "created")),
    ReportFlag("summary", "--threshold", PERCENT, "slow-down that counts as a regression in a trend (default: 5)", 5.0),
    ReportFlag("summary", "--noise-floor", PERCENT, "trends: a run with only one earlier run of its configuration must "
               f"differ by more than this (default: {NOISE_FLOOR_PERCENT:g})", NOISE_FLOOR_PERCENT),
    ReportFlag("summary", "--fail-on-regression", BOOL, "with --by: exit 1 when any configuration's latest run "
               "regressed, else 6 when one is INVALID (compare's statuses), naming them on stderr"),
    ReportFlag("summary", "--include-invalid", BOOL, "trends: judge INVALID runs too (as compare --include-invalid)"),
    ReportFlag("summary", "--csv", TEXT, "the rows as CSV, units in the column names ('-': stdout)", metavar="PATH"),
    ReportFlag("summary", "--json", TEXT, "the same rows as a JSON list ('-': stdout)", metavar="PATH"),
    ReportFlag("summary", "--html", TEXT, "one self-contained page: table, sweep curves, trends, each run's block and "
               "latency histogram", metavar="OUT.html"),
)


def report_markdown():
    """The flags page's part about mpirunner-report: one table per command (`-h` prints the same)."""
    lines = ["", "# mpirunner-report", "", "The report's commands read result files only (no torch, no MPI); "
             "`--batch-size` takes the runner's grammar."]
    for command in dict.fromkeys(flag.command for flag in REPORT_FLAGS):
        lines += ["", f"## mpirunner-report {command}", "", "| argument | value | default | meaning |",
                  "|---|---|---|---|"]
        for flag in (flag for flag in REPORT_FLAGS if flag.command == command):
            shown = f"`{flag.flag}`" if flag.flag.startswith("-") else flag.metavar
            default = "" if flag.default is None else f"`{flag.default:g}`"
            lines.append(f"| {shown} | {_value(flag)} | {default} | {_cell(flag.help)} |")
    return lines


if __name__ == "__main__":
    print(flags_markdown(), end="")
