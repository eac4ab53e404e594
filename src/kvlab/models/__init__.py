"""Model loading and the ModelSpec."""

from kvlab.models.loading import LoadedModel, load_model
from kvlab.models.spec import ModelSpec

__all__ = ["LoadedModel", "ModelSpec", "load_model"]
