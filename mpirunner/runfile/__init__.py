"""The run's file (docs/layout.md lists the modules). Nothing here imports torch or mpi4py at module level:
mpirunner.report reads files without them.
"""
