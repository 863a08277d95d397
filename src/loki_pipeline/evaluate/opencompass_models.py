"""Which OpenCompass model config a checkpoint is asked under: its chat turns and output cap.

OpenCompass renders a dataset config's prompt through the *model* config too, so the same
benchmark reaches two models differently (open-compass/opencompass 0.4.1,
``opencompass/configs/models/``, all ``HuggingFacewithChatTemplate``):

- ``hf_llama/hf_llama3_1_8b_instruct.py`` has its own ``meta_template`` (HUMAN and BOT turns
  only): each user turn is the dataset's prompt as written. It is the only HF chat config of
  that release with one (1 of 103).
- every other config, ``qwen2_5/hf_qwen2_5_0_5b_instruct.py`` among them, has none, and
  ``HuggingFacewithChatTemplate`` falls back to its default meta template, whose round is
  HUMAN, SYSTEM (sent as HUMAN), BOT. The empty SYSTEM slot is merged into the HUMAN turn
  before it with a ``"\\n"``: every user turn ends with a newline the dataset's prompt lacks.
- A dataset config without ``max_out_len`` (HellaSwag's, WinoGrande's) takes the model
  config's: 1024 for Llama-3.1-8B-Instruct, 4096 for every Qwen2.5 instruct config.

:func:`opencompass_model` recognises a checkpoint (a base model or a run trained from it: the
architecture in ``config.json`` and the chat template survive training) and returns the
profile its OpenCompass config implies. A model OpenCompass 0.4.1 has no config for gets
:data:`DEFAULT`: the default meta template, as OpenCompass asks a model whose config names
none, and ``max_out_len`` 1024, the value of 83 of the release's 103 HF chat configs.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: Tasks whose OpenCompass dataset config sets no ``max_out_len`` (the model config's applies).
MODEL_CAPPED_TASKS = frozenset({"hellaswag", "winogrande"})


@dataclasses.dataclass(frozen=True)
class OpenCompassModel:
    """How OpenCompass's model config for a checkpoint shapes what it is asked."""

    #: The model config mirrored (under ``opencompass/configs/``), or ``"default"``.
    config: str
    #: Appended to every user turn: ``"\n"`` under the default meta template, else ``""``.
    user_suffix: str
    #: ``max_out_len`` of the model config, used where the dataset config sets none.
    max_out_len: int

    def messages(self, chat: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """``chat`` (role/content dicts) as this config's meta template hands it to the chat
        template: each user turn's content with :attr:`user_suffix` appended."""
        return [
            {**m, "content": m["content"] + self.user_suffix} if m.get("role") == "user" else m
            for m in chat
        ]

    def note(self) -> str:
        """What a run's notes say about the model config it was asked under."""
        where = (
            f"OpenCompass model config {self.config}"
            if self.config != "default"
            else "no OpenCompass model config for this model: OpenCompass's default"
        )
        turns = "each user turn ends with '\\n'" if self.user_suffix else "user turns as written"
        return (
            f"{where} (meta template: {turns}; max_out_len {self.max_out_len} for "
            f"{', '.join(sorted(MODEL_CAPPED_TASKS))})"
        )


LLAMA_3_1_8B_INSTRUCT = OpenCompassModel("models/hf_llama/hf_llama3_1_8b_instruct.py", "", 1024)
QWEN_2_5_INSTRUCT = OpenCompassModel("models/qwen2_5/hf_qwen2_5_0_5b_instruct.py", "\n", 4096)
DEFAULT = OpenCompassModel("default", "\n", 1024)

#: Text only Llama 3.1's chat template holds (its system header; Llama 3's has none).
_LLAMA_3_1_MARK = "Cutting Knowledge Date: December 2023"
#: Text only Qwen2.5's chat template holds (Qwen2's default system prompt lacks it).
_QWEN_2_5_MARK = "You are Qwen, created by Alibaba Cloud."


def _chat_template(model_dir: Path) -> str:
    """The checkpoint's chat template text (``chat_template.jinja`` or the tokenizer config's)."""
    parts = []
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        parts.append(jinja.read_text(encoding="utf-8"))
    tok = model_dir / "tokenizer_config.json"
    if tok.is_file():
        template = json.loads(tok.read_text(encoding="utf-8")).get("chat_template") or ""
        parts.append(template if isinstance(template, str) else json.dumps(template))
    return "\n".join(parts)


def opencompass_model(model_dir: str | os.PathLike) -> OpenCompassModel:
    """The OpenCompass 0.4.1 model config a checkpoint directory is evaluated under.

    Llama-3.1-8B-Instruct: ``model_type`` llama, 32 layers of width 4096 and Llama 3.1's chat
    template. Qwen2.5 instruct models (every size has the same config apart from the path):
    ``model_type`` qwen2 and Qwen2.5's chat template. Anything else: :data:`DEFAULT`.
    """
    path = Path(model_dir)
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return DEFAULT
    template = _chat_template(path)
    shape = (config.get("hidden_size"), config.get("num_hidden_layers"))
    if config.get("model_type") == "llama" and shape == (4096, 32) and _LLAMA_3_1_MARK in template:
        return LLAMA_3_1_8B_INSTRUCT
    if config.get("model_type") == "qwen2" and _QWEN_2_5_MARK in template:
        return QWEN_2_5_INSTRUCT
    return DEFAULT


def generation_overrides(
    tasks: Sequence[str], model: OpenCompassModel
) -> dict[str, dict[str, Any]]:
    """task -> the ``generation_kwargs`` that give it ``model``'s output cap, for the tasks whose
    dataset config leaves the cap to the model config (:data:`MODEL_CAPPED_TASKS`)."""
    kwargs = {"until": [], "do_sample": False, "max_gen_toks": model.max_out_len}
    return {t: {"generation_kwargs": dict(kwargs)} for t in tasks if t in MODEL_CAPPED_TASKS}


def with_user_turns(apply_chat_template: Callable[..., str], model: OpenCompassModel):
    """Wrap lm-eval's ``apply_chat_template(chat_history, add_generation_prompt)`` so every
    chat it renders first gets ``model``'s user turns (:meth:`OpenCompassModel.messages`)."""

    def wrapped(chat_history, add_generation_prompt: bool = True) -> str:
        return apply_chat_template(model.messages(chat_history), add_generation_prompt)

    return wrapped
