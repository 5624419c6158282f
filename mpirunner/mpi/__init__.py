"""The MPI world and its failure handling: world.py (ranks, collectives, agree: the one way ranks decide
together), launcher.py (the MPI library suits the launcher), agreement.py and oom.py (a batch size out of
memory on one rank fails on every rank alike), guard.py with watchdog.py, signals.py, checkpoints.py and
ending.py (--timeout, SIGTERM/SIGINT, a dead rank of the host: the job never hangs and its file stays whole),
peers.py (the other ranks of this host) and faults.py (test-only fault injection)."""
