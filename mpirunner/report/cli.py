"""mpirunner-report's command line: parse the words, run `report`, `compare` or `summary`; usage errors in one line.

    mpirunner-report [report] FILE... [--ranks] [--histogram] [--plot PNG] [--csv PATH] [--json PATH]
    mpirunner-report compare BASE.h5 NEW.h5 [--threshold PERCENT] [--noise-floor PERCENT] [--include-invalid]
                             [--json PATH]
    mpirunner-report compare --base A1.h5 A2.h5 ... --new B1.h5 B2.h5 ...   # groups of reruns
        # exit 1 on a regression, 6 when NEW is INVALID or no pair could be judged, 7 different configurations
    mpirunner-report summary PATH... [filters] [--by commit|created] [--csv|--json PATH] [--html OUT.html]
"""
import argparse
import os
import sys

from mpirunner.errors import UsageError
from mpirunner.report.compare import compare_files, result_rows
from mpirunner.report.compare_text import format_comparison
from mpirunner.report.plot import check_plot_available, plot
from mpirunner.report.rows import failed_runs_text, load, sorted_runs, summary_row, write_rows
from mpirunner.report.html import check_html_available, page, write_page
from mpirunner.report.summary import (DEFAULT_SORT, SORT_KEYS, parse_batch_sizes, parse_sort, read_summary, select,
                                      sort_runs, write_summary)
from mpirunner.report.summary_text import gate_text, skipped_text, summary_table, trends_text
from mpirunner.report.text import file_text
from mpirunner.report.trends import BY, TREND_COLUMNS, build_trends, judge_trends, latest_failures
from mpirunner.report.variation import NOISE_FLOOR_PERCENT

EXIT_REGRESSION = 1
EXIT_USAGE = 2
EXIT_INVALID_PAIR = 6  # compare: a NEW run is INVALID, or every pair was excluded (docs/failure-behaviour.md)
EXIT_DIFFERENT_CONFIGURATION = 7  # compare: the two sides are not the same measurement (nothing judged)


def only_batch_size(data, batch_size):
    """The file's data with only the runs of `batch_size`; UsageError naming the sizes it holds when none."""
    runs = {name: run for name, run in data["runs"].items() if run["attrs"].get("batch_size") == batch_size}
    if not runs:
        sizes = sorted({int(run["attrs"]["batch_size"]) for run in data["runs"].values() if "batch_size" in run["attrs"]})
        raise UsageError(f"--batch-size {batch_size}: {data['path']} has no run of that size "
                         f"(it holds {', '.join(map(str, sizes)) or 'none'})")
    return {**data, "runs": runs}


def report(args):
    """`report FILE...`: headline and table per file; --ranks, --histogram, --plot, --csv, --json on request.

    With `--csv -` or `--json -` stdout carries only that data (for pipes); the tables are left out.
    """
    if args.csv == "-" and args.json == "-":
        raise UsageError("only one of --csv and --json can write to stdout ('-')")
    files = [load(path) for path in args.files]
    if args.batch_size is not None:
        files = [only_batch_size(data, args.batch_size) for data in files]
    if args.ranks and args.plot and sum(len(sorted_runs(data)) for data in files) > 1:
        raise UsageError("--ranks with --plot colours one run's histogram by rank; these files hold several "
                         "runs: add --batch-size N to pick one")
    if args.plot:
        check_plot_available(args.plot)
    to_stdout = "-" in (args.csv, args.json)
    all_rows = []
    for data in files:
        names = sorted_runs(data)
        rows = [summary_row(data, name) for name in names]
        all_rows.extend(rows)
        if not to_stdout:
            print(file_text(data, names, rows, ranks=args.ranks, histogram=args.histogram))
            if failed_runs_text(data):
                print(failed_runs_text(data))
    if args.csv:
        write_rows(all_rows, args.csv, "csv")
    if args.json:
        write_rows(all_rows, args.json, "json")
    if args.plot:
        written = plot(files, args.plot, per_rank=args.ranks)
        print(f"plot written to {written}", file=sys.stderr if to_stdout else sys.stdout)
    return 0


def _sides(args):
    """(BASE paths, NEW paths) from `compare BASE NEW` or `compare --base A.. --new B..`; UsageError otherwise."""
    if args.base or args.new:
        if args.files or not (args.base and args.new):
            raise UsageError("compare takes BASE.h5 NEW.h5, or --base FILE... --new FILE... (not both forms)")
        return list(args.base), list(args.new)
    if len(args.files) != 2:
        raise UsageError(f"compare takes two files, BASE.h5 NEW.h5 (got {len(args.files)}), or groups of reruns: "
                         "--base FILE... --new FILE...")
    return [args.files[0]], [args.files[1]]


def _check_percent(name, value):
    if value < 0:
        raise UsageError(f"{name} must be a percentage >= 0, got {value}")


def compare(args):
    """`compare BASE NEW` or `compare --base A.. --new B..`: match runs by batch size, print ratios and verdicts.

    1 when any run regressed; else 7 when the sides are different configurations at some batch size; else
    EXIT_INVALID_PAIR when a NEW run is INVALID or no pair was judged.
    """
    _check_percent("--threshold", args.threshold)
    _check_percent("--noise-floor", args.noise_floor)
    base_paths, new_paths = _sides(args)
    bases, news = [load(path) for path in base_paths], [load(path) for path in new_paths]
    results = compare_files(bases, news, args.threshold / 100.0, seed=args.seed, include_invalid=args.include_invalid,
                            noise_floor_percent=args.noise_floor)
    if not any("pair" in result or "differences" in result for result in results):
        raise UsageError(f"nothing to compare: {', '.join(map(str, base_paths))} and {', '.join(map(str, new_paths))} "
                         "have no batch size in common")
    if args.json != "-":
        print(format_comparison(bases, news, results, args.threshold, args.noise_floor))
        for data in bases + news:
            if failed_runs_text(data):
                print(failed_runs_text(data))
    if args.json:
        write_rows(result_rows(results), args.json, "json")
    statuses = {result["regression_verdict"] for result in results if "pair" in result or "differences" in result}
    if "regressed" in statuses:
        return EXIT_REGRESSION
    if "different-configuration" in statuses:
        return EXIT_DIFFERENT_CONFIGURATION
    if "invalid-new" in statuses or not statuses & {"improved", "same"}:
        return EXIT_INVALID_PAIR
    return 0


def summary(args):
    """`summary PATH...`: a row per run over many files (attributes only), trends with --by, a page with --html.

    With `--csv -` or `--json -` stdout carries only that data; the table is left out and skipped files go to stderr.
    """
    if args.csv == "-" and args.json == "-":
        raise UsageError("only one of --csv and --json can write to stdout ('-')")
    _check_percent("--threshold", args.threshold)
    _check_percent("--noise-floor", args.noise_floor)
    if args.fail_on_regression and not args.by:
        raise UsageError("--fail-on-regression judges each configuration's latest run against the earlier ones: "
                         "add --by commit or --by created")
    if args.html:
        check_html_available(args.html)
    keys = parse_sort(args.sort or "")
    sizes = parse_batch_sizes(args.batch_size) if args.batch_size else ()
    found = read_summary(args.paths, histograms=bool(args.html), keys=bool(args.by))
    runs = sort_runs(select(found.runs, args.model or (), args.device or (), sizes, args.valid_only), keys)
    trends = None
    if args.by:
        trends = judge_trends(build_trends(runs, args.by), args.by, args.threshold, args.include_invalid,
                              noise_floor_percent=args.noise_floor)
    to_stdout = "-" in (args.csv, args.json)
    notes = sys.stderr if to_stdout else sys.stdout
    if not to_stdout:
        print(summary_table(runs, with_trend=trends is not None) if runs else "no runs found")
        if trends:
            print(trends_text(trends, args.threshold, args.noise_floor))
    if found.skipped or found.other_files:
        print(skipped_text(found), file=notes)
    extra = TREND_COLUMNS if trends is not None else ()
    for kind in ("csv", "json"):
        if getattr(args, kind):
            write_summary(runs, getattr(args, kind), kind, extra)
    if args.html:
        written = write_page(args.html, page(found, runs, trends, args.paths))
        print(f"page written to {written}", file=notes)
    return _gate(trends) if args.fail_on_regression else 0


def _gate(trends):
    """--fail-on-regression: compare's exit status over each configuration's latest step (1 regressed, else 6
    for an INVALID latest run), each failure on a line of stderr."""
    failures = latest_failures(trends)
    if not failures:
        return 0
    print(gate_text(failures), file=sys.stderr)
    statuses = {trend.steps[-1][1].row["trend"] for trend in failures}
    return EXIT_REGRESSION if "regressed" in statuses else EXIT_INVALID_PAIR


def build_parsers():
    """(report parser, compare parser); `report` is also what runs when the first word is a file."""
    report_parser = argparse.ArgumentParser(
        prog="mpirunner-report [report]",
        description="Tables, latency histograms, plots and CSV/JSON from mpirunner HDF5 files (no torch or MPI needed). "
                    "See also: mpirunner-report compare BASE.h5 NEW.h5, mpirunner-report summary PATH...")
    report_parser.add_argument("files", nargs="+", metavar="FILE", help="mpirunner HDF5 result files")
    report_parser.add_argument("--ranks", action="store_true",
                               help="a row per rank (host, NUMA node, cpus, throughput, median latency); per-rank colours in --plot")
    report_parser.add_argument("--histogram", action="store_true", help="draw each run's latency histogram in the terminal (log bins)")
    report_parser.add_argument("--plot", metavar="PATH.png",
                               help="write a PNG: one run -> latency histogram; a sweep -> throughput vs batch size and vs p99 latency")
    report_parser.add_argument("--csv", metavar="PATH", help="one row per run with every summary field ('-': stdout)")
    report_parser.add_argument("--json", metavar="PATH", help="the same rows as a JSON list ('-': stdout)")
    report_parser.add_argument("--batch-size", type=int, metavar="N",
                               help="only the run(s) of batch size N (e.g. one histogram or --plot of a sweep)")

    compare_parser = argparse.ArgumentParser(
        prog="mpirunner-report compare",
        usage="mpirunner-report compare BASE.h5 NEW.h5 [options]\n"
              "       mpirunner-report compare --base FILE [FILE ...] --new FILE [FILE ...] [options]",
        description="Compare NEW against BASE run by run (matched on batch size): one file per side, or groups of "
                    "reruns (--base/--new). Same world size: the slowest NEW rank's time per sample against BASE's; "
                    "different world sizes: whole-job throughput. Exit status 1 when NEW is worse by more than "
                    "--threshold, beyond the steps' noise (bootstrap interval) AND beyond the run-to-run noise (the "
                    "spread between the files of a side; with one file per side, the --noise-floor); 6 when a NEW run "
                    "is INVALID or no pair could be judged (INVALID runs are left out unless --include-invalid); "
                    "7 when "
                    "the sides are different configurations (nothing judged, the differing settings are named).")
    compare_parser.add_argument("files", nargs="*", metavar="BASE.h5 NEW.h5", help="one file per side")
    compare_parser.add_argument("--base", nargs="+", metavar="FILE", help="BASE as a group of reruns (with --new)")
    compare_parser.add_argument("--new", nargs="+", metavar="FILE", help="NEW as a group of reruns (with --base)")
    compare_parser.add_argument("--threshold", type=float, default=5.0, metavar="PERCENT",
                                help="slow-down that counts as a regression (default: 5)")
    compare_parser.add_argument("--noise-floor", type=float, default=NOISE_FLOOR_PERCENT, metavar="PERCENT",
                                help="with one file per side, the smallest change that can count: the run-to-run "
                                     f"noise no single pair measures (default: {NOISE_FLOOR_PERCENT:g})")
    compare_parser.add_argument("--include-invalid", action="store_true",
                                help="judge pairs with an INVALID run too (they are left out by default)")
    compare_parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling (default: 0)")
    compare_parser.add_argument("--json", metavar="PATH", help="one row per batch size: the verdict, what decided it "
                                "and its numbers, as a JSON list ('-': stdout, the table left out)")
    summary_parser = argparse.ArgumentParser(
        prog="mpirunner-report summary",
        description="One table over many result files (folders searched recursively for *.h5, *.hdf5): a row per run "
                    "with its stored summary and verdict. Unreadable files are listed as skipped, never fatal.")
    summary_parser.add_argument("paths", nargs="+", metavar="PATH", help="result files or folders")
    summary_parser.add_argument("--model", action="append", metavar="GLOB", help="only these models (repeatable)")
    summary_parser.add_argument("--device", action="append", metavar="TEXT",
                                help="only this backend (cpu, cuda, ipu) or device name (part or glob; repeatable)")
    summary_parser.add_argument("--batch-size", metavar="N[,N...]", help="only these batch sizes")
    summary_parser.add_argument("--valid-only", action="store_true", help="leave INVALID runs out")
    summary_parser.add_argument("--sort", metavar="KEY[,KEY...]",
                                help=f"sort by {', '.join(SORT_KEYS)}; '--sort=-KEY' descending "
                                     f"(default: {','.join(DEFAULT_SORT)})")
    summary_parser.add_argument("--by", choices=BY, help="trends: each configuration's runs in this order, each "
                                "step judged against the earlier valid ones with compare's rule")
    summary_parser.add_argument("--threshold", type=float, default=5.0, metavar="PERCENT",
                                help="slow-down that counts as a regression in a trend (default: 5)")
    summary_parser.add_argument("--noise-floor", type=float, default=NOISE_FLOOR_PERCENT, metavar="PERCENT",
                                help="trends: a run with only one earlier run of its configuration must differ by more "
                                     f"than this (default: {NOISE_FLOOR_PERCENT:g})")
    summary_parser.add_argument("--fail-on-regression", action="store_true",
                                help="with --by: exit 1 when any configuration's latest run regressed, else 6 when "
                                     "one is INVALID (compare's statuses), naming them on stderr")
    summary_parser.add_argument("--include-invalid", action="store_true",
                                help="trends: judge INVALID runs too (as compare --include-invalid)")
    summary_parser.add_argument("--csv", metavar="PATH", help="the rows as CSV, units in the column names ('-': stdout)")
    summary_parser.add_argument("--json", metavar="PATH", help="the same rows as a JSON list ('-': stdout)")
    summary_parser.add_argument("--html", metavar="OUT.html", help="one self-contained page: table, sweep curves, "
                                "trends, each run's block and latency histogram")
    return report_parser, compare_parser, summary_parser


def main(argv=None):
    """Entry point of `mpirunner-report` and `python -m mpirunner.report`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    report_parser, compare_parser, summary_parser = build_parsers()
    try:
        if argv and argv[0] == "compare":
            return compare(compare_parser.parse_args(argv[1:]))
        if argv and argv[0] == "summary":
            return summary(summary_parser.parse_args(argv[1:]))
        if argv and argv[0] == "report":
            argv = argv[1:]
        return report(report_parser.parse_args(argv))
    except UsageError as error:
        print(f"mpirunner-report: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `mpirunner-report ... | head`: stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not complain
        return 0
