"""The run's file: one typed Run (and its Job) from the moment rank 0 builds it to every reader
(docs/layout.md lists the modules). Nothing here imports torch or mpi4py at module level: mpirunner.report
reads files without them.
"""
