"""The pipeline config's one schema: load it, check a config against it, fill its defaults.

The checks that relate a config to the registries (tasks, runs), ``extends:`` and the config
merge live above them, in :mod:`loki_pipeline.config`. ``config.schema.yaml`` ships inside the package (package-data), so the Snakemake workflow
(``workflow/rules/common.smk``) and ``loki train --config`` check a config against the same
file, and an installed (non-editable) package still has it. Every error names the key it is
about (``training.methods.full.batch_size: 2.7 is not of type 'integer'``).
"""

from __future__ import annotations

import copy
import difflib
import functools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from loki_pipeline.errors import LokiInputError
from loki_pipeline.safe_yaml import clip

SCHEMA_FILE = Path(__file__).with_name("config.schema.yaml")
#: the URI the schema is registered under, so ``$ref``s resolve inside it
_SCHEMA_URI = "urn:loki-pipeline:config.schema.yaml"


@functools.cache
def load_schema() -> dict[str, Any]:
    """The config schema as a dict (read once)."""
    import yaml

    return yaml.safe_load(SCHEMA_FILE.read_text())


@functools.cache
def _validator(pointer: str = ""):
    """A 2020-12 validator of the schema at JSON pointer ``pointer`` ('' = the whole config)."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    registry = Registry().with_resource(_SCHEMA_URI, Resource.from_contents(load_schema()))
    return Draft202012Validator({"$ref": f"{_SCHEMA_URI}#{pointer}"}, registry=registry)


def resolve_ref(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """``schema`` with a local ``$ref`` (``#/$defs/...``) merged in, its own keys winning."""
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    target: Any = load_schema()
    for part in ref[2:].split("/"):
        target = target[part]
    merged = dict(resolve_ref(target))
    merged["properties"] = {**merged.get("properties", {}), **schema.get("properties", {})}
    merged.update({k: v for k, v in schema.items() if k not in ("$ref", "properties")})
    return merged


def _key(path: Iterable[Any], prefix: str) -> str:
    return ".".join([prefix, *map(str, path)] if prefix else map(str, path)) or "config"


def _describe(error, prefix: str) -> str:
    """One line naming the key an error is about and what was expected there."""
    while error.context:  # oneOf/anyOf: the deepest error of a branch of the right type
        inner = [e for e in error.context if e.relative_path or e.validator != "type"]
        if not inner:
            break
        error = max(inner, key=lambda e: len(e.absolute_path))
    key = _key(error.absolute_path, prefix)
    if error.validator in ("additionalProperties", "unevaluatedProperties") and isinstance(
        error.instance, Mapping
    ):
        known = sorted(resolve_ref(error.schema).get("properties", {}))
        unknown = [k for k in error.instance if k not in known]
        hints = [
            f"{k!r} (did you mean {close[0]!r}?)"
            if (close := difflib.get_close_matches(str(k), known, n=1))
            else repr(k)
            for k in unknown
        ]
        where = "top-level key" if key == "config" else f"key under {key}"
        return f"unknown {where}: {', '.join(hints)}; known: {', '.join(known)}"
    if error.schema.get("pattern") == load_schema()["$defs"]["name"]["pattern"]:
        what = "name" if "propertyNames" in error.relative_schema_path else "value"
        return (
            f"{key}: {what} {error.instance!r} is not allowed: use letters, digits, '.', '_' or "
            "'-', starting with a letter or digit (it becomes a folder name)"
        )
    if "propertyNames" in error.relative_schema_path:
        return f"{key}: key {error.message}"
    return f"{key}: {error.message}"


def check(instance: Any, pointer: str = "", *, prefix: str = "") -> None:
    """Raise ``LokiInputError`` listing every way ``instance`` breaks the schema at ``pointer``.

    ``prefix`` is the dotted key of ``instance`` in messages (``training`` for a training block).
    """
    errors = sorted(_validator(pointer).iter_errors(instance), key=lambda e: list(map(str, e.path)))
    if errors:
        lines = [clip(_describe(e, prefix)) for e in errors]
        raise LokiInputError("invalid config:\n  " + "\n  ".join(dict.fromkeys(lines)))


def fill_defaults(instance: Any, schema: Mapping[str, Any] | None = None) -> Any:
    """Set every absent key that has a schema default, in place (nested objects included).

    Follows ``properties``, ``additionalProperties`` (e.g. each ``models.<name>``) and local
    ``$ref``s, as Snakemake's ``validate(set_default=True)`` did, but stops at a schema marked
    ``x-fill-defaults: false``: a per-task or per-method training override sets only the keys
    it names.
    """
    schema = resolve_ref(load_schema() if schema is None else schema)
    if not isinstance(instance, dict) or schema.get("x-fill-defaults") is False:
        return instance
    properties = schema.get("properties", {})
    for key, sub in properties.items():
        sub = resolve_ref(sub)
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            fill_defaults(instance[key], sub)
    extra = schema.get("additionalProperties")
    if isinstance(extra, Mapping):
        for key, value in instance.items():
            if key not in properties:
                fill_defaults(value, extra)
    return instance


def validate_training(training: Any, *, prefix: str = "training") -> dict[str, Any]:
    """Check a ``training`` block (defaults, ``threads``, ``tasks``, ``methods``) on its own.

    ``loki train --config`` and :func:`loki_pipeline.train.settings.resolve_settings` use it,
    so an override such as ``batch_size: 2.7`` fails here, naming its key, not inside the loop.
    """
    if training is None:
        return {}
    check(training, "/properties/training", prefix=prefix)
    return training
