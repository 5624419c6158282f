"""The run's file: one typed Run (and its Job) from the moment rank 0 builds it to every reader.

    run.py     the typed Job, Run, RankRow and a run's nested parts (point, verdict, summary, ...)
    names.py   the only place that knows attribute names and their unit-named twins; Run <-> attrs
    hdf5.py    the only module under mpirunner/ that imports h5py: atomic write, read_job, fast reads
    build.py   rank 0 builds a Run from the gathered timings
    output.py  the output file settled before any model is built (--resume, the output lock)
    sweep.py   rank 0's file during a sweep (SweepFile, Keeper)
    block.py   the text the runner prints (run block, sweep table, verdict, hardware line)
    shown.py   what a run is shown by everywhere: the achieved rate, query vs batch latency, the percentile rule

Nothing here imports torch or mpi4py at module level: mpirunner.report reads files without them.
"""
