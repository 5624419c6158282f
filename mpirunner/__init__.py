"""mpirunner: a distributed, per-instance runner for CNN inference benchmarks."""

__version__ = "0.1.0"
SCHEMA = "mpirunner/1"


def _find_models_in_checkout():
    """Make `mpirunner.models` importable from a checkout that is on sys.path but not installed.

    The model code lives in the checkout's top-level models/ folder; setup.py installs it as
    mpirunner.models (package_dir), so it cannot collide with another package named `models`.
    Run from the checkout without installing (PYTHONPATH=<checkout>, as on a GPU machine), there is
    no mpirunner/models: this finder maps the name to <checkout>/models instead. An installed copy,
    or setuptools' editable finder, is found first and this one is never asked.
    """
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
