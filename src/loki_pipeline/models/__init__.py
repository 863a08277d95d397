"""Models: architecture adapter, model sources (hub, local, GGUF in a PyPI wheel) and loading."""

from loki_pipeline.models.architecture import (
    SUPPORTED_MODEL_TYPES,
    ArchitectureAdapter,
    check_supported,
    get_adapter,
)

__all__ = ["SUPPORTED_MODEL_TYPES", "ArchitectureAdapter", "check_supported", "get_adapter"]
