"""Model construction: the registry of benchmarkable models, input normalisation and layer swaps."""
from mpirunner.models.registry import MODEL_RESOLUTIONS, build_model, default_resolution, model_names

__all__ = ["MODEL_RESOLUTIONS", "build_model", "default_resolution", "model_names"]
