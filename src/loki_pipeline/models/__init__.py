"""Models: architecture adapter, model sources (hub, local, GGUF in a PyPI wheel) and loading."""

from loki_pipeline.models.architecture import (
    SUPPORTED_MODEL_TYPES,
    ArchitectureAdapter,
    check_supported,
    get_adapter,
)
from loki_pipeline.models.loading import load_model, prepare_model
from loki_pipeline.models.sources import parse_source

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "ArchitectureAdapter",
    "check_supported",
    "get_adapter",
    "load_model",
    "parse_source",
    "prepare_model",
]
