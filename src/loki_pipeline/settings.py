"""Stage settings: one dataclass per stage, its defaults read from the config schema.

The schema (``schemas/config.schema.yaml``) documents every key with its default; the settings
objects take their defaults from it, so a default is written in one place only. A field made
with :func:`from_schema` names the config key it mirrors (``"kva.steps"``), which is how
:meth:`StageSettings.from_config` finds its value in a pipeline config and how a test checks
every default against the schema. :meth:`StageSettings.from_cli` takes an argparse namespace
whose attributes are named like the fields (``None``: not given, the default stands), after
lm-eval's ``EvaluatorConfig.from_cli``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from loki_pipeline.errors import LokiInputError

_MISSING = object()

S = TypeVar("S", bound="StageSettings")


def schema_node(key: str) -> Mapping[str, Any]:
    """The schema of config key ``key`` (dotted, e.g. ``"evaluate.general.batch_size"``)."""
    from loki_pipeline.schemas import load_schema, resolve_ref

    node: Mapping[str, Any] = load_schema()
    for part in key.split("."):
        resolved = resolve_ref(node)
        properties = resolved.get("properties", {})
        if part in properties:
            node = properties[part]
        elif isinstance(resolved.get("additionalProperties"), Mapping):
            node = resolved["additionalProperties"]  # a map: every key has the same schema
        else:
            raise KeyError(f"the config schema has no key {key!r} (at {part!r})")
    return resolve_ref(node)


def schema_default(key: str) -> Any:
    """The schema's default of config key ``key`` (a fresh copy), filled in as
    ``validate_config`` fills it: ``kva.dataset`` is ``{source, split, max_per_subject}``."""
    from loki_pipeline.schemas import fill_defaults

    node = schema_node(key)
    if "default" not in node:
        raise KeyError(f"the config schema gives no default for {key!r}")
    return fill_defaults(copy.deepcopy(node["default"]), node)


def help_default(text: str, key: str) -> str:
    """CLI help ``text`` with the schema's default of ``key`` appended, so ``--help`` cannot
    state a default the schema does not have."""
    value = schema_default(key)
    shown = ",".join(map(str, value)) if isinstance(value, list) else value
    return f"{text} (default: {shown})"


def from_schema(key: str, **kwargs: Any) -> Any:
    """A dataclass field mirroring config key ``key``, with the schema's default."""
    value = schema_default(key)
    metadata = {"config": key, **kwargs.pop("metadata", {})}
    if isinstance(value, (dict, list)):
        return dataclasses.field(
            default_factory=lambda: copy.deepcopy(value), metadata=metadata, **kwargs
        )
    return dataclasses.field(default=value, metadata=metadata, **kwargs)


def config_key(f: dataclasses.Field) -> str | None:
    """The config key a settings field mirrors, or None for a field that is not in the config."""
    return f.metadata.get("config")


def lookup(config: Mapping[str, Any], key: str, default: Any = _MISSING) -> Any:
    """``config[a][b]...`` for dotted ``key``; ``default`` (or a ``LokiInputError``) if absent."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            if default is _MISSING:
                raise LokiInputError(f"config has no key {key!r}")
            return default
        node = node[part]
    return node


class StageSettings:
    """Base of a stage's settings dataclass (``@dataclass class X(StageSettings)``)."""

    @classmethod
    def from_config(cls: type[S], config: Mapping[str, Any], **extra: Any) -> S:
        """From a pipeline config (whole, as validated); keys it lacks keep their defaults.

        ``extra`` sets fields that are not config keys (paths, wildcards) or overrides.
        """
        absent = object()
        values = {}
        for f in dataclasses.fields(cls):
            key = config_key(f)
            if key is not None and (value := lookup(config, key, absent)) is not absent:
                values[f.name] = copy.deepcopy(value)
        return cls(**{**values, **extra})

    @classmethod
    def from_cli(cls: type[S], args: argparse.Namespace, **extra: Any) -> S:
        """From parsed arguments named like the fields; ``None`` (not given) keeps the default."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in vars(args).items() if k in names and v is not None}
        return cls(**{**values, **extra})

    @classmethod
    def schema_defaults(cls) -> dict[str, Any]:
        """Field -> the schema's default, for every field that mirrors a config key."""
        return {
            f.name: schema_default(key)
            for f in dataclasses.fields(cls)
            if (key := config_key(f)) is not None
        }

    @classmethod
    def resolve(cls: type[S], settings: S | None = None, **overrides: Any) -> S:
        """``settings`` (None: the schema's defaults) with ``overrides`` set, so a function that
        takes a settings object also takes its fields as keywords; an unknown name is an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(overrides) - names):
            raise LokiInputError(
                f"unknown {cls.__name__} field(s) {unknown}; known: {', '.join(sorted(names))}"
            )
        return dataclasses.replace(cls() if settings is None else settings, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
