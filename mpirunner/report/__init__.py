"""mpirunner-report: tables, histograms, plots, CSV/JSON, comparisons, summaries and trends from result files alone
(through mpirunner.runfile; never torch or mpi4py, matplotlib for --plot and --html only; docs/reports.md)."""


def main(argv=None):
    """Console script `mpirunner-report` (setup.py): see mpirunner.report.cli.main."""
    from mpirunner.report.cli import main as cli_main

    return cli_main(argv)
