"""The command line's one vocabulary: ``--model``, ``--out``, ``--device`` in every command.

A renamed flag keeps its old spelling for one release as a hidden alias: a second option with
the same ``dest`` and ``help=argparse.SUPPRESS``, so ``--help`` shows only the new name.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_renamed(
    parser: argparse.ArgumentParser, name: str, *old: str, **kwargs: Any
) -> argparse.Action:
    """Option ``name``; the ``old`` spellings parse into the same ``dest``, hidden from --help.

    ``required=True`` means one of the spellings is required (giving two is an error).
    """
    group = parser.add_mutually_exclusive_group(required=kwargs.pop("required", False))
    action = group.add_argument(name, **kwargs)
    hidden = {k: v for k, v in kwargs.items() if k not in ("help", "dest")}
    group.add_argument(*old, dest=action.dest, help=argparse.SUPPRESS, **hidden)
    return action


def add_device(parser: argparse.ArgumentParser, **kwargs: Any) -> argparse.Action:
    """``--device``, defaulting to the config schema's ``device`` (auto: CUDA when present)."""
    from loki_pipeline.settings import help_default, schema_default

    text = help_default("cpu, cuda, cuda:N or auto, which picks CUDA when present", "device")
    return parser.add_argument("--device", default=schema_default("device"), help=text, **kwargs)


def add_setting(
    parser: argparse.ArgumentParser, flag: str, key: str, text: str, **kwargs: Any
) -> argparse.Action:
    """``flag`` for config key ``key``: left out it is None (the settings object then takes the
    schema's default, which the help names); the schema's ``enum`` are its choices."""
    from loki_pipeline.settings import help_default, schema_node

    if "enum" in (node := schema_node(key)):
        kwargs.setdefault("choices", node["enum"])
    return parser.add_argument(flag, help=help_default(text, key), **kwargs)


def add_checkpoint_output(parser: argparse.ArgumentParser) -> None:
    """``--out`` and ``--dtype`` of a command that writes a plain checkpoint (merge, suppress);
    the dtypes are the schema's (``training.dtype``)."""
    from loki_pipeline.settings import schema_node

    parser.add_argument("--out", required=True, help="output checkpoint directory (atomic)")
    parser.add_argument("--dtype", default="float32", choices=schema_node("training.dtype")["enum"])
