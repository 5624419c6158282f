"""python -m mpirunner.report: tables, histograms, plots, CSV/JSON, comparisons, summaries and trends from HDF5
files alone, read through mpirunner.runfile; never torch or mpi4py (matplotlib for --plot and --html only).

Every number of `mpirunner-report FILE` is recomputed from the raw arrays with mpirunner.stats, so the report also
checks the stored summary; a scenario run's rate and query latencies are shown as stored (mpirunner.runfile.shown).
"""


def main(argv=None):
    """Console script `mpirunner-report` (setup.py): see mpirunner.report.cli.main."""
    from mpirunner.report.cli import main as cli_main

    return cli_main(argv)
