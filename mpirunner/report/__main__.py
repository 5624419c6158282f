"""python -m mpirunner.report ... -> mpirunner.report.cli.main()."""
import sys

from mpirunner.report.cli import main

sys.exit(main())
