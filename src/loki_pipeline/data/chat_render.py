"""Render a chat through a checkpoint's own template under a time limit.

A chat template is code shipped with the checkpoint (Jinja in ``tokenizer_config.json`` or
``chat_template.jinja``). transformers runs it sandboxed, but a template with nested huge loops
still renders for hours and would hang every prompt without a word. ``render_chat`` stops it
after ``RENDER_SECONDS`` with a ``LokiInputError`` naming the checkpoint whose template it is.
"""

from __future__ import annotations

from typing import Any

from loki_pipeline.errors import LokiInputError
from loki_pipeline.time_limit import time_limit

#: Seconds one render may take; a real template renders a prompt in milliseconds.
RENDER_SECONDS = 10.0


def render_chat(tokenizer: Any, messages: Any, **kwargs: Any) -> Any:
    """``tokenizer.apply_chat_template(messages, **kwargs)``, stopped after ``RENDER_SECONDS``."""
    try:
        with time_limit(RENDER_SECONDS, "render over time"):
            return tokenizer.apply_chat_template(messages, **kwargs)
    except TimeoutError:
        where = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise LokiInputError(
            f"the chat template of {where} (its tokenizer_config.json 'chat_template' or "
            f"chat_template.jinja) did not finish rendering one prompt within "
            f"{RENDER_SECONDS:g} s: it loops or is far too slow; fix or replace that template"
        ) from None
