"""python -m mpirunner.report: tables, terminal histograms, plots, CSV/JSON and regression checks from HDF5 files alone.

The HDF5 file is read on any machine: this package uses h5py and numpy only (matplotlib for
--plot), never torch or mpi4py. Every number shown is recomputed from the raw per-step arrays
with mpirunner.stats, so the report is also a check of the stored summary.

    rows.py     load a file, recompute each run's summary row, write CSV/JSON
    text.py     every printed line (also the runner's per-run block and sweep table)
    compare.py  regression check of NEW against BASE (bootstrap of per-sample step time)
    plot.py     PNG figures (matplotlib)
    cli.py      the command line of mpirunner-report
"""


def main(argv=None):
    """Console script `mpirunner-report` (setup.py): see mpirunner.report.cli.main.

    Imported on call, so the runner importing mpirunner.report.text does not load the CLI and plots.
    """
    from mpirunner.report.cli import main as cli_main

    return cli_main(argv)
