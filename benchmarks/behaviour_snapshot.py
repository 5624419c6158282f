"""Behaviour snapshot: what a user sees from mpirunner at one commit, with the numbers masked.

    python benchmarks/behaviour_snapshot.py --commit REV --out DIR     # take a snapshot of REV
    python benchmarks/behaviour_snapshot.py --diff DIR_A DIR_B         # exit 1 when they differ

A snapshot checks REV out into a throwaway `git worktree` (under a temporary folder, removed
afterwards), puts that checkout first on PYTHONPATH and runs a fixed list of user-level commands
with this interpreter (and the `mpiexec` beside it), in a temporary working folder so that
`results/` lands there: a single-process run, a 2-rank sweep of two batch sizes, a `--resume`
adding a size, a `--strict` run, the server and single-stream scenarios, usage errors (exit 2),
the `--help` texts, then `mpirunner-report` on the files written (text, `--ranks --histogram`,
CSV, JSON, `--plot`, `compare`, `summary` as text/CSV/JSON/trends/`--html`). The report's
command is the `mpirunner-report` entry point that REV's setup.py declares, so a moved `main`
is followed.

Recorded, one text file per command in DIR: the command line, the exit status, stdout and
stderr masked. Then one file per written output: for an HDF5 file every group, dataset and
attribute name with its dtype kind and shape rank (string attribute values too, masked; no
numeric values); for the HTML page its tag structure (tag, id, class; an <svg> is reduced to
the set of element names it holds) and its text; for CSV the header and the row count; for
JSON the key sets and value types; for a PNG its signature and size in pixels.

Masking, applied to every text recorded: the temporary folders, the checkout and the repo are
replaced by <TMP>/<SRC>/<REPO>, the host name by <HOST>, timestamps by <TIME>, hexadecimal hashes
by <HASH>, every number that is not part of a name by `#` (resnet18, float32, p99.9, bs00002 stay;
pids, versions, timings, inf/nan go), ANSI escapes and carriage-return progress redraws are
dropped, runs of blanks become one blank (table widths follow the numbers).

What varies between two runs of one commit on a busy machine, and how it is kept out (measured:
two snapshots of one commit, taken while other jobs loaded the 2 cores, diff empty):
- verdicts are made not to follow timings. The single-process offline runs pass every timing rule
  whatever the timings: `--max-cv 1000`, `--min-duration 0.001` (else a window under 1 s is "too
  short"), 4 steps (the warm-up rule needs 6). Runs that can fail a timing rule anyway (2 ranks:
  the straggler rule; server: keep-up, unserved, latency over the bound) are INVALID for a reason
  that does not depend on timing: the sweep by step count (`--iterations 4 --min-iterations 5`),
  the server by its ~12 seeded queries, too few for a p99; `--strict` by step count. The timing
  rules' reason texts (too short, unstable, not warmed up, slowing down, straggler, runner
  overhead, input-bound, unserved, did not keep up, over the bound; TIMING_REASONS) are then
  dropped wherever they appear (also when wrapped over lines), with a `batch N:` prefix or an
  empty list item left holding only them, so the verdict word and the remaining reasons are
  compared as they are. A reason list the runner lays out one per line (it does when one line
  would be too long, which depends on the numbers and on the dropped reasons) is read as the one
  line `a; b; c` it stands for; the page's split of the straggler remedy at '; ' is dropped too.
  VALID/INVALID words are NOT masked: a flip between two snapshots of one commit means a timing
  rule this list does not know of.
- compare: `--threshold 1000` (no regression from noise); direction words (faster, slower,
  within noise ...) become <DIR>; the one pair judged across world sizes
  (compare-include-invalid) has its verdict column masked as <VERDICT>.
- intervals print as `[low, high]` or `± half` depending on the values: both become `[#, #]`;
  a rate's SI prefix (MFLOP/s, GFLOP/s) is dropped.
- text histograms: the number of bins and the bar lengths follow the data, so the bin lines of one
  histogram become one `<histogram bins>` line; per-rank tables are sorted, without the sign
  against the median and the `<- slowest` mark (one line says whether a row was marked).
- the HTML page: an <svg> (inline or an <img> data URI) is recorded as the sorted set of element
  names it contains, without counts (bars and ticks follow the measured range).
- 2-rank runs: lines both ranks print to one stream can interleave, so the stderr of an
  `mpiexec` command is recorded sorted.
- HDF5: dataset shapes by rank (number of dims), not length (histogram bins, step counts).
- summary's row order: the default sort ends with created time and file name, both fixed by the
  order of the commands; `--sort throughput` is not used.

Files whose names start with `_` in DIR are not compared by --diff: _info.txt (the commit, the
time each command took), _raw/ (unmasked stdout/stderr), _work/ (the files written).

    python benchmarks/behaviour_snapshot.py --commit NEW --out DIR_C --files-from DIR_A

reads the result files of snapshot DIR_A (written by an earlier commit) with NEW's report instead
of running the runner (the runner's records are copied from DIR_A): `--diff DIR_A DIR_C` then
says whether files written before a change still read the same.
"""
import argparse
import difflib
import html.parser
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# every run: small and quick. Verdicts must not follow timing noise: --max-cv 1000 and --min-duration
# 0.001 (instead of the default 1 s minimum) pass for any timings; the warm-up rule needs 6 steps.
SMALL = ["--model", "resnet18", "--image-size", "32", "--device", "cpu", "--warmup-iterations", "1",
         "--no-progress"]
LOOSE = ["--max-cv", "1000", "--min-iterations", "1"]
OFFLINE = SMALL + LOOSE + ["--iterations", "4", "--min-duration", "0.001"]
# 2 ranks can be called stragglers by noise: these runs are INVALID by step count whatever the timings
SWEEP = SMALL + ["--max-cv", "1000", "--min-duration", "0.001", "--iterations", "4", "--min-iterations", "5"]

# (name, kind, args); kind: run = python -m mpirunner, mpi = mpiexec -n 2 python -m mpirunner,
# report = the mpirunner-report entry point, module = python -m <args>.
# {single} = the file the default-output run wrote under results/.
COMMANDS = [
    ("help-runner", "run", ["--help"]),
    ("help-report", "report", ["--help"]),
    ("help-report-compare", "report", ["compare", "--help"]),
    ("help-report-summary", "report", ["summary", "--help"]),
    ("help-report-module", "module", ["mpirunner.report", "--help"]),
    ("version", "run", ["--version"]),
    ("list-configs", "run", ["--list-configs"]),
    ("single", "run", OFFLINE + ["--batch-size", "2"]),
    ("sweep-2ranks", "mpi", SWEEP + ["--batch-size", "1,2", "--output", "results/sweep.h5"]),
    ("sweep-resume", "mpi", SWEEP + ["--batch-size", "1,2,4", "--output", "results/sweep.h5", "--resume"]),
    ("strict", "run", SMALL + ["--max-cv", "1000", "--min-duration", "0.001", "--iterations", "3",
                               "--min-iterations", "10", "--batch-size", "2", "--strict", "--output",
                               "results/strict.h5"]),
    # INVALID whatever the timings: ~12 seeded queries are too few for a p99
    ("server", "run", SMALL + LOOSE + ["--scenario", "server", "--batch-size", "2", "--target-qps", "8",
                                       "--min-duration", "1", "--max-batch-wait-ms", "5",
                                       "--latency-bound", "100000", "--output", "results/server.h5"]),
    ("single-stream", "run", OFFLINE + ["--scenario", "single-stream", "--output", "results/stream.h5"]),
    ("bad-batch-size", "run", ["--batch-size", "0"]),
    ("bad-server-list", "run", SMALL + ["--scenario", "server", "--batch-size", "1,2", "--target-qps", "8",
                                        "--min-duration", "1"]),
    ("bad-output-exists", "run", OFFLINE + ["--batch-size", "2", "--output", "results/strict.h5"]),
    ("bad-config", "run", ["--config", "no-such-config"]),
    ("report-text", "report", ["results/sweep.h5"]),
    ("report-ranks-histogram", "report", ["--ranks", "--histogram", "results/sweep.h5"]),
    ("report-csv", "report", ["--csv", "-", "results/sweep.h5"]),
    ("report-json", "report", ["--json", "-", "results/sweep.h5"]),
    ("report-files", "report", ["--csv", "out/report.csv", "--json", "out/report.json", "{single}",
                                "results/server.h5", "results/stream.h5"]),
    ("report-batch-size", "report", ["--batch-size", "2", "--histogram", "results/sweep.h5"]),
    ("report-scenarios", "report", ["--ranks", "--histogram", "results/server.h5", "results/stream.h5"]),
    ("report-plot-sweep", "report", ["--plot", "out/sweep.png", "results/sweep.h5"]),
    ("report-plot-one", "report", ["--plot", "out/one.png", "--batch-size", "2", "results/sweep.h5"]),
    ("report-missing", "report", ["results/missing.h5"]),
    # judged pairs use --threshold 1000: no regression is found from noise
    ("compare-same", "report", ["compare", "{single}", "{single}"]),
    ("compare-worlds", "report", ["compare", "--threshold", "1000", "{single}", "results/sweep.h5"]),
    ("compare-include-invalid", "report", ["compare", "--threshold", "1000", "--include-invalid", "{single}",
                                           "results/sweep.h5"]),
    ("compare-invalid", "report", ["compare", "--threshold", "1000", "{single}", "results/strict.h5"]),
    ("compare-bad-args", "report", ["compare", "results/sweep.h5"]),
    ("summary-text", "report", ["summary", "results"]),
    ("summary-csv", "report", ["summary", "--csv", "-", "results"]),
    ("summary-json", "report", ["summary", "--json", "-", "results"]),
    ("summary-filtered", "report", ["summary", "--batch-size", "1,2", "--valid-only", "--sort", "batch-size",
                                    "results"]),
    ("summary-trends", "report", ["summary", "--by", "created", "--threshold", "1000", "results"]),
    ("summary-files", "report", ["summary", "--csv", "out/summary.csv", "--json", "out/summary.json",
                                 "--html", "out/page.html", "results"]),
    ("summary-bad-sort", "report", ["summary", "--sort", "no-such-key", "results"]),
]


# a pair judged on two different machines' worth of noise: its verdict column follows the timings
NOISY_VERDICT = {"compare-include-invalid"}
JUDGED = re.compile(r"(whole-job throughput|per-rank time per sample) .*$")

# ---------------------------------------------------------------- masking

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?|\d{8}T\d{6}Z?")
HASH = re.compile(r"(?<![0-9A-Za-z])(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,64}(?![0-9A-Za-z])")
# a number that is not part of a name (resnet18, float32, p99.9, bs00002 stay as they are)
NUMBER = re.compile(r"(?<![A-Za-z0-9_])(?<![A-Za-z0-9_]\.)(?:\d+(?:\.\d+)*|\.\d+)(?:[eE][-+]?\d+)?|\b(?:inf|nan)\b")
DIRECTION = re.compile(r"\b(faster|slower|within noise|no change|improved|regressed|better|worse)\b")
# verdict reasons decided by timings (a shared 2-core machine makes them come and go), as they read
# after masking (a space may be a line break: long reasons are wrapped); the commands make every run
# that could show one INVALID for a reason that does not depend on timing as well, so dropping these
# leaves the verdict itself unchanged
TIMING_REASONS = [
    r"too short: timed # s < ANY more --iterations\)",
    r"unstable: step-time cv ANY or a quieter machine\)",
    r"not warmed up: ANY --until-stable\)",
    r"slowing down: ANY --until-stable\)",
    r"speed changed: ANY --until-stable\)",
    r"straggler: ANY --cpus-per-rank\)",
    # the page lists reasons split at '; ', which cuts the straggler's remedy in two
    r"straggler: ANY /ranks cpus(?=\s*$)",
    r"(?<![\w-])--numa-aware yes, --cpus-per-rank\)",
    r"runner overhead: ANY to rule out the input\)",
    r"input-bound: ANY CPUs per rank for decoding\)",
    r"# of # queries unserved when the drain bound ANY ran out — lower --target-qps or add instances",
    r"did not keep up: achieved ANY — lower --target-qps or add instances",
    r"p[0-9.#]+ query latency # ms over the bound # ms — lower --target-qps or --max-batch-wait-ms, or add instances",
]
TIMING = re.compile("|".join("(?:" + reason.replace(" ", r"\s+").replace(r"ANY\s+", r"[\s\S]{0,400}?") + ")"
                             for reason in TIMING_REASONS))
# an interval is printed as [low, high] or as ± half-width, whichever fits the values; a rate's prefix
# (MFLOP/s, GFLOP/s) follows its size
INTERVAL = re.compile(r"\[#, #\]|± #")
RATE_PREFIX = re.compile(r"\b[kKMGTPE]?FLOP\b")
HISTOGRAM_BIN = re.compile(r"^# - # \|")
RANK_ROW = re.compile(r"^# <HOST> ")


class Masker:
    def __init__(self, replacements):
        # longest first, so that a folder inside another is replaced as itself
        self.replacements = sorted(replacements, key=lambda pair: -len(pair[0]))
        host = re.escape(socket.gethostname())
        self.host = re.compile(rf"(?<![A-Za-z0-9_.-]){host}(?![A-Za-z0-9_-])")

    def mask(self, text):
        text = ANSI.sub("", text)
        for old, new in self.replacements:
            text = text.replace(old, new)
        text = self.host.sub("<HOST>", text)
        text = TIME.sub("<TIME>", text)
        text = HASH.sub("<HASH>", text)
        text = NUMBER.sub("#", text)
        return RATE_PREFIX.sub("FLOP", INTERVAL.sub("[#, #]", text))

    def line(self, text):
        """One name or value on one line: masked, blanks collapsed."""
        return " ".join(self.mask(text).split())

    def text(self, text, sort=False):
        """A command's output or a stored text as lines, the timing-decided verdict reasons dropped
        with the separator or the `batch N:` label that only framed them. A reason list laid out one
        per line (the runner does so when one line would be too long, which depends on the numbers)
        is read as the one line `a; b; c` it stands for."""
        raw_lines = [raw.split("\r")[-1] for raw in text.replace("\r\n", "\n").split("\n")]  # progress redraws
        blob = re.sub(r";[ \t]*\n\s*", "; ", self.mask("\n".join(raw_lines)))
        blob = TIMING.sub("<T>", blob)
        lines = []
        for raw in blob.split("\n"):
            line = " ".join(raw.split())
            if "<T>" in line:
                line = re.sub(r"<T>(?:; )?", "", line)
                line = re.sub(r";\s*(?=[)\]]|$)", "", line).strip()
                if not line or re.fullmatch(r"batch #:", line):
                    continue
            if line:
                lines.append(line)
        lines = steady(lines)
        if sort:
            lines.sort()
        return lines


def steady(lines):
    """A text histogram's bins (their number and bar lengths follow the data) become one line; the
    rows of a per-rank table are sorted, without their sign against the median and the `<- slowest`
    mark (which rank is slower follows the timings), and a line says whether a row was marked."""
    out, ranks = [], []
    for line in lines + [""]:
        if RANK_ROW.match(line):
            ranks.append(line)
            continue
        if ranks:
            out += sorted(re.sub(r"[+-]#%", "±#%", line.replace(" <- slowest", "")) for line in ranks)
            out.append("(a row marked <- slowest)" if any("<- slowest" in r for r in ranks) else "(no row marked)")
            ranks = []
        if HISTOGRAM_BIN.match(line):
            if not out or out[-1] != "<histogram bins>":
                out.append("<histogram bins>")
            continue
        out.append(line)
    return out[:-1]


def collapse_repeats(lines):
    out = []
    for line in lines:
        if not out or out[-1] != line:
            out.append(line)
    return out


# ---------------------------------------------------------------- files

def dtype_text(dtype):
    if dtype.names:
        return "{" + ", ".join(f"{name}: {dtype_text(dtype.fields[name][0])}" for name in dtype.names) + "}"
    import h5py
    if h5py.check_string_dtype(dtype) is not None or dtype.kind in "SUO":
        return "string"
    return f"{dtype.kind}{dtype.itemsize}"


def attr_value_text(value, masker):
    import numpy as np
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        return " = " + " / ".join(masker.text(value))
    if isinstance(value, np.ndarray) and value.dtype.kind in "SUO":
        items = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in value.ravel()]
        masked = [" / ".join(masker.text(item)) for item in items]
        return " = [" + " | ".join(item for item in masked if item) + "]"
    return ""


def hdf5_lines(path, masker):
    import h5py
    import numpy as np
    lines = []

    def attrs(name, obj):
        for key in sorted(obj.attrs.keys()):
            value = obj.attrs[key]
            array = np.asarray(value)
            lines.append(f"  @{key}: {dtype_text(array.dtype)} rank {array.ndim}{attr_value_text(value, masker)}")

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            lines.append(f"dataset /{masker.line(name)}: {dtype_text(obj.dtype)} rank {len(obj.shape)}")
        else:
            lines.append(f"group /{masker.line(name)}")
        attrs(name, obj)

    with h5py.File(path, "r") as handle:
        lines.append("group /")
        attrs("/", handle)
        names = []
        handle.visit(names.append)
        for name in sorted(names):
            visit(name, handle[name])
    return lines


class PageStructure(html.parser.HTMLParser):
    VOID = {"meta", "link", "br", "hr", "img", "input", "col", "area", "base", "wbr", "source"}

    def __init__(self, masker):
        super().__init__(convert_charrefs=True)
        self.masker = masker
        self.lines = []
        self.depth = 0
        self.svg = None  # element names inside the <svg> being read
        self.svg_depth = 0

    def handle_starttag(self, tag, attrs):
        if self.svg is not None:
            self.svg.add(tag)
            if tag not in self.VOID:
                self.svg_depth += 1
            return
        attrs = dict(attrs)
        label = tag
        if attrs.get("id"):
            label += "#" + self.masker.line(attrs["id"])
        if attrs.get("class"):
            label += "." + ".".join(self.masker.line(attrs["class"]).split())
        source = attrs.get("src") or ""
        if source:
            label += " src=" + self.masker.line(source.split(",")[0].split(";")[0])
        self.lines.append("  " * self.depth + "<" + label + ">")
        if source.startswith("data:image/svg+xml"):
            self.lines.append("  " * (self.depth + 1) + "svg holds: " + " ".join(svg_elements(source)))
        if tag == "svg":
            self.svg = set()
            self.svg_depth = 1
        elif tag not in self.VOID:
            self.depth += 1

    def handle_startendtag(self, tag, attrs):
        if self.svg is not None:
            self.svg.add(tag)
            return
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID and tag != "svg":
            self.depth -= 1

    def handle_endtag(self, tag):
        if self.svg is not None:
            self.svg_depth -= 1
            if self.svg_depth == 0:
                self.lines.append("  " * (self.depth + 1) + "svg holds: " + " ".join(sorted(self.svg)))
                self.svg = None
            return
        if tag not in self.VOID:
            self.depth = max(0, self.depth - 1)

    def handle_data(self, data):
        if self.svg is not None:
            return
        for text in self.masker.text(data):
            self.lines.append("  " * self.depth + "text: " + text)


def svg_elements(source):
    """The sorted element names of an SVG data URI (base64 or percent-encoded)."""
    import base64
    import urllib.parse
    head, _, body = source.partition(",")
    text = base64.b64decode(body).decode("utf-8", "replace") if ";base64" in head else urllib.parse.unquote(body)
    return sorted(set(re.findall(r"<([A-Za-z][\w:-]*)", text)))


def html_lines(path, masker):
    parser = PageStructure(masker)
    parser.feed(Path(path).read_text(encoding="utf-8"))
    parser.close()
    lines = parser.lines
    # an element left empty because its only text was a dropped timing reason (a list item) goes too
    kept = [line for index, line in enumerate(lines)
            if not (line.strip() == "<li>" and (index + 1 == len(lines) or indent(lines[index + 1]) <= indent(line)))]
    return collapse_repeats(kept)


def indent(line):
    return len(line) - len(line.lstrip(" "))


def csv_lines(text, masker):
    import csv
    import io
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return ["(empty)"]
    return ["header: " + ",".join(rows[0]), f"rows: {len(rows) - 1}"]


def json_shape(value):
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {json_shape(value[key])}" for key in sorted(value)) + "}"
    if isinstance(value, list):
        kinds = sorted({json_shape(item) for item in value})
        return f"list of {len(value)} [" + " | ".join(kinds) + "]"
    if isinstance(value, bool):
        return "bool"
    if value is None or isinstance(value, (int, float)):
        # a null where a number is expected (p99 of too few latencies) is data, not shape
        return "number|null"
    return "string"


def json_lines(text):
    try:
        value = json.loads(text)
    except ValueError as error:
        return [f"not JSON: {type(error).__name__}"]
    return [json_shape(value)]


def png_lines(path):
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return ["not a PNG"]
    width = int.from_bytes(data[16:20], "big")
    height = int.from_bytes(data[20:24], "big")
    return [f"PNG {width} x {height}"]


def output_lines(path, masker):
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        return hdf5_lines(path, masker)
    if suffix in (".html", ".htm"):
        return html_lines(path, masker)
    if suffix == ".csv":
        return csv_lines(path.read_text(encoding="utf-8"), masker)
    if suffix == ".json":
        return json_lines(path.read_text(encoding="utf-8"))
    if suffix == ".png":
        return png_lines(path)
    return masker.text(path.read_text(encoding="utf-8", errors="replace"))


# ---------------------------------------------------------------- running

def report_entry(source):
    """The module:function REV's setup.py names for mpirunner-report (default mpirunner.report:main)."""
    setup = source / "setup.py"
    if setup.exists():
        found = re.search(r"mpirunner-report\s*=\s*([\w.]+):(\w+)", setup.read_text())
        if found:
            return found.group(1), found.group(2)
    return "mpirunner.report", "main"


def command_line(kind, args, python, mpiexec, entry):
    if kind == "run":
        return [python, "-m", "mpirunner"] + args
    if kind == "mpi":
        return [mpiexec, "-n", "2", python, "-m", "mpirunner"] + args
    if kind == "module":
        return [python, "-m"] + args
    module, function = entry
    code = (f"import sys; sys.argv[0] = 'mpirunner-report'; from {module} import {function} as main; "
            "sys.exit(main())")
    return [python, "-c", code] + args


def shown(kind, args):
    prefix = {"run": "python -m mpirunner", "mpi": "mpiexec -n 2 python -m mpirunner",
              "report": "mpirunner-report", "module": "python -m"}[kind]
    return " ".join([prefix] + args)


def resolve(args, work):
    out = []
    for arg in args:
        if arg == "{single}":
            found = sorted(p for p in (work / "results").glob("resnet18-*.h5"))
            arg = str(found[0].relative_to(work)) if found else "results/(no default-output file)"
        out.append(arg)
    return out


def environment(source):
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("MPIRUNNER", "PYTHON", "OMPI_", "PMI_", "SLURM", "POPDIST", "POPTORCH"))}
    env.update(PYTHONPATH=str(source), PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0", COLUMNS="100",
               LINES="40", TZ="UTC", LC_ALL="C.UTF-8", LANG="C.UTF-8", MPLBACKEND="Agg", TERM="dumb")
    return env


# the commands that write the result files (left out with --files-from)
WRITERS = {"single", "sweep-2ranks", "sweep-resume", "strict", "server", "single-stream"}


def snapshot(commit, out, python, mpiexec, timeout, files_from=None):
    out = Path(out).resolve()
    if out.exists() and any(out.iterdir()):
        sys.exit(f"{out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", commit], check=True, capture_output=True,
                         text=True).stdout.strip()
    temp = Path(tempfile.mkdtemp(prefix="mpirunner-snapshot-"))
    source, work = temp / "src", temp / "work"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(source), sha], check=True,
                   capture_output=True)
    timings = []
    try:
        (work / "results").mkdir(parents=True)
        (work / "out").mkdir()
        (out / "_raw").mkdir()
        if files_from:
            for path in sorted((Path(files_from) / "_work" / "results").glob("*")):
                shutil.copy2(path, work / "results" / path.name)
        env = environment(source)
        entry = report_entry(source)
        masker = Masker([(str(work), "<TMP>"), (str(source), "<SRC>"), (str(temp), "<TMP>"),
                         (str(REPO), "<REPO>"), (str(Path(python).parent), "<BIN>")])
        for index, (name, kind, template) in enumerate(COMMANDS, 1):
            args = resolve(template, work)
            record_file = f"{index:02d}-{name}.txt"
            if files_from and name in WRITERS:  # the files were written by the snapshot they come from
                shutil.copy2(Path(files_from) / record_file, out / record_file)
                continue
            begin = time.monotonic()
            try:
                done = subprocess.run(command_line(kind, args, python, mpiexec, entry), cwd=work, env=env,
                                      capture_output=True, text=True, timeout=timeout,
                                      stdin=subprocess.DEVNULL)
                status, stdout, stderr = done.returncode, done.stdout, done.stderr
            except subprocess.TimeoutExpired as expired:
                status = "timeout"
                stdout = expired.stdout.decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
                stderr = expired.stderr.decode() if isinstance(expired.stderr, bytes) else (expired.stderr or "")
            timings.append(f"{time.monotonic() - begin:6.1f} s  {name}")
            (out / "_raw" / f"{index:02d}-{name}.out").write_text(stdout)
            (out / "_raw" / f"{index:02d}-{name}.err").write_text(stderr)
            stdout_lines = masker.text(stdout)
            if name.startswith("compare"):
                stdout_lines = [DIRECTION.sub("<DIR>", line) for line in stdout_lines]
            if name in NOISY_VERDICT:
                stdout_lines = [JUDGED.sub(r"\1 <VERDICT>", line) for line in stdout_lines]
            if "--csv" in args and args[args.index("--csv") + 1] == "-":
                stdout_lines = csv_lines(stdout, masker)
            if "--json" in args and args[args.index("--json") + 1] == "-":
                stdout_lines = json_lines(stdout)
            stderr_lines = masker.text(stderr, sort=kind == "mpi")
            record = [f"$ {masker.line(shown(kind, args))}", f"exit: {status}", "--- stdout"] + stdout_lines
            record += ["--- stderr"] + stderr_lines
            (out / record_file).write_text("\n".join(record) + "\n")
        files = sorted(p for p in work.rglob("*") if p.is_file())
        for path in files:
            relative = path.relative_to(work)
            label = masker.line(str(relative)).replace("/", "__")
            try:
                lines = output_lines(path, masker)
            except Exception as error:  # an unreadable output is a finding, not a crash
                lines = [f"unreadable: {type(error).__name__}"]
            (out / f"file-{label}.txt").write_text(f"file {masker.line(str(relative))}\n" + "\n".join(lines) + "\n")
        shutil.copytree(work, out / "_work")  # the files themselves, for --files-from and for a closer look
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(source)],
                       capture_output=True)
        subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], capture_output=True)
        shutil.rmtree(temp, ignore_errors=True)
    total = time.monotonic() - started
    reused = f"files from {Path(files_from).resolve()}\n" if files_from else ""
    (out / "_info.txt").write_text(f"commit {sha}\n{reused}taken {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"
                                   f"python {python}\nmpiexec {mpiexec}\ntotal {total:.1f} s\n"
                                   + "\n".join(timings) + "\n")
    print(f"snapshot of {sha[:12]} in {out} ({len(COMMANDS)} commands, {total:.0f} s)")


def diff(dir_a, dir_b):
    dir_a, dir_b = Path(dir_a), Path(dir_b)
    names = sorted({p.name for d in (dir_a, dir_b) for p in d.iterdir()
                    if p.is_file() and not p.name.startswith("_")})
    differs = False
    for name in names:
        a, b = dir_a / name, dir_b / name
        lines_a = a.read_text().splitlines(keepends=True) if a.exists() else []
        lines_b = b.read_text().splitlines(keepends=True) if b.exists() else []
        if lines_a != lines_b:
            differs = True
            sys.stdout.writelines(difflib.unified_diff(lines_a, lines_b, str(a), str(b)))
    return 1 if differs else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commit", help="the commit to snapshot (any git revision)")
    parser.add_argument("--out", help="folder for the snapshot (new or empty)")
    parser.add_argument("--diff", nargs=2, metavar=("DIR_A", "DIR_B"), help="compare two snapshots")
    parser.add_argument("--python", default=sys.executable, help="interpreter (default: this one)")
    parser.add_argument("--mpiexec", default=None, help="default: the mpiexec beside --python, else on PATH")
    parser.add_argument("--timeout", type=float, default=120, help="seconds per command (default: 120)")
    parser.add_argument("--files-from", metavar="SNAPSHOT", help="read the result files of an earlier snapshot "
                        "(its _work/results) instead of running the runner: do files written before still read "
                        "the same? The runner's records are copied from it")
    args = parser.parse_args(argv)
    if args.diff:
        return diff(*args.diff)
    if not (args.commit and args.out):
        parser.error("give --commit REV --out DIR, or --diff DIR_A DIR_B")
    mpiexec = args.mpiexec or str(Path(args.python).parent / "mpiexec")
    if not Path(mpiexec).exists():
        mpiexec = shutil.which("mpiexec") or "mpiexec"
    snapshot(args.commit, args.out, args.python, mpiexec, args.timeout, args.files_from)
    return 0


if __name__ == "__main__":
    sys.exit(main())
