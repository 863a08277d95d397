"""One small adapter over the decoder-only architectures LoKI supports.

LoKI only needs to find, for each transformer block, the FFN ``down_proj`` linear layer and the
modules around it (embeddings, rotary embedding, final norm, LM head) that the exact KVA backend
re-runs. Llama, Qwen2, Qwen3 and Mistral share that layout (``model.model.layers[i].mlp.down_proj``);
anything else is rejected at once with a message naming what is supported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loki_pipeline.errors import LokiInputError

if TYPE_CHECKING:  # torch is imported by whoever holds a model; `loki --help` stays light
    from torch import nn

#: ``config.model_type`` values with the Llama-style block layout.
SUPPORTED_MODEL_TYPES: tuple[str, ...] = ("llama", "qwen2", "qwen3", "mistral")


def check_supported(model_type: str, *, where: str = "model") -> None:
    """Raise ``LokiInputError`` unless ``model_type`` is one LoKI knows how to attribute and train."""
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise LokiInputError(
            f"{where}: unsupported architecture {model_type!r}; LoKI supports "
            f"{', '.join(SUPPORTED_MODEL_TYPES)} (decoder layers with mlp.down_proj)"
        )


@dataclass(frozen=True)
class ArchitectureAdapter:
    """Named access to the parts of a supported causal LM that LoKI touches.

    ``num_layers x d_model`` knowledge output nodes, each owning ``d_ff`` weights (one row of
    ``down_proj.weight``).
    """

    model: nn.Module
    model_type: str

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def decoder(self) -> nn.Module:
        """The bare decoder (``model.model``): embeddings, layers, final norm, rotary embedding."""
        return self.model.model

    @property
    def layers(self) -> nn.ModuleList:
        return self.decoder.layers

    @property
    def embed_tokens(self) -> nn.Module:
        return self.decoder.embed_tokens

    @property
    def rotary_emb(self) -> nn.Module:
        return self.decoder.rotary_emb

    @property
    def final_norm(self) -> nn.Module:
        return self.decoder.norm

    @property
    def lm_head(self) -> nn.Module:
        return self.model.lm_head

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def d_model(self) -> int:
        return int(self.config.hidden_size)

    @property
    def d_ff(self) -> int:
        return int(self.config.intermediate_size)

    def down_proj(self, layer: int) -> nn.Module:
        """The FFN down-projection of block ``layer`` (its output coordinates are the nodes)."""
        return self.layers[layer].mlp.down_proj

    def set_down_proj(self, layer: int, module: nn.Module) -> None:
        """Replace block ``layer``'s down-projection (used to wrap it in a LoKI layer)."""
        self.layers[layer].mlp.down_proj = module

    def down_projs(self) -> list[nn.Module]:
        return [self.down_proj(i) for i in range(self.num_layers)]


def get_adapter(model: nn.Module) -> ArchitectureAdapter:
    """Wrap a loaded Hugging Face causal LM; reject unsupported architectures early."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", type(model).__name__)
    check_supported(model_type, where=type(model).__name__)
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(model, "lm_head"):
        raise LokiInputError(
            f"{type(model).__name__}: expected a *ForCausalLM with .model.layers and .lm_head"
        )
    return ArchitectureAdapter(model=model, model_type=model_type)


def cache_kwarg(module: nn.Module) -> str:
    """Name of a layer's/model's KV-cache argument: ``cache`` since transformers 5.x,
    ``past_key_values`` before (``past_key_value`` for 4.x decoder layers)."""
    import inspect

    params = inspect.signature(module.forward).parameters
    for name in ("cache", "past_key_values", "past_key_value"):
        if name in params:
            return name
    raise LokiInputError(f"{type(module).__name__}.forward takes no KV cache argument")
