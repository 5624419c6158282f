"""mpirunner-report's command line: parse the words, run `report` or `compare`, turn usage errors into one line.

    mpirunner-report [report] FILE... [--ranks] [--histogram] [--plot PNG] [--csv PATH] [--json PATH]
    mpirunner-report compare BASE.h5 NEW.h5 [--threshold PERCENT]   # exit 1 on a regression
"""
import argparse
import sys

from mpirunner.errors import UsageError
from mpirunner.report.compare import compare_files, metadata_differences
from mpirunner.report.plot import check_plot_available, plot
from mpirunner.report.rows import load, sorted_runs, summary_row, write_rows
from mpirunner.report.text import file_text, format_comparison

EXIT_REGRESSION = 1
EXIT_USAGE = 2


def report(args):
    """`report FILE...`: headline and table per file; --ranks, --histogram, --plot, --csv, --json on request.

    With `--csv -` or `--json -` stdout carries only that data (for pipes); the tables are left out.
    """
    if args.csv == "-" and args.json == "-":
        raise UsageError("only one of --csv and --json can write to stdout ('-')")
    files = [load(path) for path in args.files]
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
    if args.csv:
        write_rows(all_rows, args.csv, "csv")
    if args.json:
        write_rows(all_rows, args.json, "json")
    if args.plot:
        written = plot(files, args.plot, per_rank=args.ranks)
        print(f"plot written to {written}", file=sys.stderr if to_stdout else sys.stdout)
    return 0


def compare(args):
    """`compare BASE NEW`: match runs by batch size, print ratios and verdicts; 1 when any run regressed."""
    if args.threshold < 0:
        raise UsageError(f"--threshold must be a percentage >= 0, got {args.threshold}")
    base, new = load(args.base), load(args.new)
    results = compare_files(base, new, args.threshold / 100.0, seed=args.seed)
    if not any("time_ratio" in result for result in results):
        raise UsageError(f"nothing to compare: {args.base} and {args.new} have no batch size in common")
    print(format_comparison(base, new, results, args.threshold, metadata_differences(base, new)))
    regressed = any(result["regression_verdict"] == "regressed" for result in results)
    return EXIT_REGRESSION if regressed else 0


def build_parsers():
    """(report parser, compare parser); `report` is also what runs when the first word is a file."""
    report_parser = argparse.ArgumentParser(
        prog="mpirunner-report [report]",
        description="Tables, latency histograms, plots and CSV/JSON from mpirunner HDF5 files (no torch or MPI needed). "
                    "See also: mpirunner-report compare BASE.h5 NEW.h5.")
    report_parser.add_argument("files", nargs="+", metavar="FILE", help="mpirunner HDF5 result files")
    report_parser.add_argument("--ranks", action="store_true",
                               help="a row per rank (host, NUMA node, cpus, throughput, median latency); per-rank colours in --plot")
    report_parser.add_argument("--histogram", action="store_true", help="draw each run's latency histogram in the terminal (log bins)")
    report_parser.add_argument("--plot", metavar="PATH.png",
                               help="write a PNG: one run -> latency histogram; a sweep -> throughput vs batch size and vs p99 latency")
    report_parser.add_argument("--csv", metavar="PATH", help="one row per run with every summary field ('-': stdout)")
    report_parser.add_argument("--json", metavar="PATH", help="the same rows as a JSON list ('-': stdout)")

    compare_parser = argparse.ArgumentParser(
        prog="mpirunner-report compare",
        description="Compare NEW against BASE run by run (matched on batch size). Exit status 1 when NEW is slower "
                    "than BASE by more than --threshold beyond noise (bootstrap interval of per-sample step time).")
    compare_parser.add_argument("base", metavar="BASE.h5")
    compare_parser.add_argument("new", metavar="NEW.h5")
    compare_parser.add_argument("--threshold", type=float, default=5.0, metavar="PERCENT",
                                help="slow-down that counts as a regression (default: 5)")
    compare_parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling (default: 0)")
    return report_parser, compare_parser


def main(argv=None):
    """Entry point of `mpirunner-report` and `python -m mpirunner.report`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    report_parser, compare_parser = build_parsers()
    try:
        if argv and argv[0] == "compare":
            return compare(compare_parser.parse_args(argv[1:]))
        if argv and argv[0] == "report":
            argv = argv[1:]
        return report(report_parser.parse_args(argv))
    except UsageError as error:
        print(f"mpirunner-report: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return 0
