"""The MPI world and its failure handling (docs/layout.md lists the modules): the job never hangs and its file
stays whole."""
