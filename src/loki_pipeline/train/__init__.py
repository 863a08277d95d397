"""Training (PAPER.md section 3): one method registry, one resumable SFT loop for every method."""

from loki_pipeline.train.methods import GRAMMAR, Method, parse_method
from loki_pipeline.train.settings import TrainSettings, resolve_settings

__all__ = ["GRAMMAR", "Method", "TrainSettings", "parse_method", "resolve_settings"]
