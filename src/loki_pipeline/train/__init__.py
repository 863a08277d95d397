"""Training (LoKI's Implanting stage): one method registry, one resumable SFT loop for all."""

from loki_pipeline.train.methods import GRAMMAR, Method, parse_method
from loki_pipeline.train.settings import TrainSettings, resolve_settings

__all__ = ["GRAMMAR", "Method", "TrainSettings", "parse_method", "resolve_settings"]
