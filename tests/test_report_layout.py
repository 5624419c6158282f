"""mpirunner-report's place in the package: a few modules, read from the file alone (no torch, no MPI, no h5py
of its own), and nothing of the runner leans on it."""
import ast
import subprocess
import sys
from pathlib import Path

from tests.test_report import make_file

REPO = Path(__file__).resolve().parent.parent
REPORT = REPO / "mpirunner" / "report"

BLOCKED = '''
import sys

class Blocker:
    """Refuses torch and mpi4py as if they were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "mpi4py"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None

sys.meta_path.insert(0, Blocker())
'''


def _imports(path):
    """The modules a source file imports (absolute names; `from . import x` counted as its package)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_report_has_at_most_eight_modules_each_under_400_lines():
    modules = sorted(path.name for path in REPORT.glob("*.py") if path.name not in ("__init__.py", "__main__.py"))
    assert len(modules) <= 8, modules
    long = {path.name: n for path in REPORT.glob("*.py") if (n := len(path.read_text().splitlines())) > 400}
    assert not long, long


def test_report_reads_files_through_runfile_and_the_runner_never_imports_report():
    for path in REPORT.glob("*.py"):
        assert not {name for name in _imports(path) if name.split(".")[0] in ("h5py", "torch", "mpi4py")}, path.name
    outside = [path for path in (REPO / "mpirunner").rglob("*.py") if REPORT not in path.parents]
    leaning = {str(path.relative_to(REPO)) for path in outside
               if any(name == "mpirunner.report" or name.startswith("mpirunner.report.") for name in _imports(path))}
    assert not leaning, leaning


def test_report_runs_with_torch_and_mpi4py_blocked(tmp_path):
    path = make_file(tmp_path / "sweep.h5", batch_sizes=(1, 4))
    code = BLOCKED + (
        "import importlib, pkgutil, mpirunner.report as report\n"
        "for module in pkgutil.iter_modules(report.__path__):\n"
        "    if module.name != '__main__':\n"
        "        importlib.import_module(f'mpirunner.report.{module.name}')\n"
        f"status = report.main([{str(path)!r}, '--batch-size', '1..4', '--ranks'])\n"
        "assert 'torch' not in sys.modules and 'mpi4py' not in sys.modules, sorted(sys.modules)\n"
        "sys.exit(status)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "per rank:" in done.stdout and str(path) in done.stdout
