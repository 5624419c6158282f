"""python -m mpirunner.report: tables, terminal histograms, plots, CSV/JSON, comparisons, summaries and trends
from HDF5 files alone.

Files are read through mpirunner.runfile (its typed Job and Run; runfile/hdf5.py is the one module that
imports h5py): numpy, PyYAML and matplotlib (for --plot and --html) only, never torch or mpi4py. Every number
of `mpirunner-report FILE` is recomputed from the raw per-step arrays with mpirunner.stats, so the report is
also a check of the stored summary; a single-stream or server run's achieved rate and query latencies are shown
as stored, the numbers the runner printed (mpirunner.runfile.shown: one meaning per column, one percentile
rule). The runner does not import this package: the text it prints about a run
is mpirunner.runfile.block, which the report shows as it is.

    cli.py        the command line (its words are declared in mpirunner/options.py, REPORT_FLAGS)
    rows.py       every read of a file; the rows of tables, CSV and JSON
    text.py       what `mpirunner-report FILE` and `compare` print
    summary.py    `summary`: filters, order, its table and columns, trends grouped by configuration
    compare.py    the regression rule of `compare` and of each trend step
    variation.py  the configuration key, the between-run spread and the within-run bootstrap
    figures.py    the figures of --plot (histogram, sweep, server load), drawn once with matplotlib
    html.py       the summary's self-contained page: its own figures (sweep and trend SVGs from figures.py's
                  drawing, hand-drawn SVG histograms)
"""


def main(argv=None):
    """Console script `mpirunner-report` (setup.py): see mpirunner.report.cli.main."""
    from mpirunner.report.cli import main as cli_main

    return cli_main(argv)
