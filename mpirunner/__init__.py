"""mpirunner: a distributed, per-instance runner for CNN inference benchmarks."""

__version__ = "0.1.0"
SCHEMA = "mpirunner/1"


def _find_models_in_checkout():
    """Make `mpirunner.models` importable from a checkout on sys.path but not installed (PYTHONPATH=<checkout>):
    setup.py installs the top-level models/ folder as mpirunner.models; without it, map the name to
    <checkout>/models. An installed copy, or setuptools' editable finder, is found first."""
    import importlib.abc
    import importlib.util
    import sys
    from pathlib import Path

    package = Path(__file__).resolve().parent
    models = package.parent / "models"
    if (package / "models").is_dir() or not (models / "__init__.py").is_file():
        return

    class CheckoutModelsFinder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            if fullname != "mpirunner.models":
                return None
            return importlib.util.spec_from_file_location(fullname, models / "__init__.py",
                                                          submodule_search_locations=[str(models)])

    if not any(type(finder).__name__ == "CheckoutModelsFinder" for finder in sys.meta_path):
        sys.meta_path.append(CheckoutModelsFinder())


_find_models_in_checkout()
