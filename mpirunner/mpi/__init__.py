"""The MPI world and its failure handling (docs/layout.md lists the modules): no hung job, no broken file."""
