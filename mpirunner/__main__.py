"""`python -m mpirunner` runs the benchmark command line."""
import sys

from mpirunner.cli import main

sys.exit(main())
