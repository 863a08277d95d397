"""The pipeline config's one schema, and the checks every config passes before anything runs.

``config.schema.yaml`` ships inside the package (package-data), so the Snakemake workflow
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


def _resolve(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """``schema`` with a local ``$ref`` (``#/$defs/...``) merged in, its own keys winning."""
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    target: Any = load_schema()
    for part in ref[2:].split("/"):
        target = target[part]
    merged = dict(_resolve(target))
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
        known = sorted(_resolve(error.schema).get("properties", {}))
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
        lines = [_describe(e, prefix) for e in errors]
        raise LokiInputError("invalid config:\n  " + "\n  ".join(dict.fromkeys(lines)))


def fill_defaults(instance: Any, schema: Mapping[str, Any] | None = None) -> Any:
    """Set every absent key that has a schema default, in place (nested objects included).

    Follows ``properties``, ``additionalProperties`` (e.g. each ``models.<name>``) and local
    ``$ref``s, as Snakemake's ``validate(set_default=True)`` did, but stops at a schema marked
    ``x-fill-defaults: false``: a per-task or per-method training override sets only the keys
    it names.
    """
    schema = _resolve(load_schema() if schema is None else schema)
    if not isinstance(instance, dict) or schema.get("x-fill-defaults") is False:
        return instance
    properties = schema.get("properties", {})
    for key, sub in properties.items():
        sub = _resolve(sub)
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


def check_experiments(config: Mapping[str, Any]) -> None:
    """Every ``experiments`` entry names a model of ``models`` and a task of ``tasks``.

    The schema cannot say this (it relates two keys); without it a misspelt model plans no job.
    """
    models, tasks = config.get("models") or {}, config.get("tasks") or {}
    problems = []
    for model, runs in (config.get("experiments") or {}).items():
        if model not in models:
            problems.append(
                f"experiments.{model}: model {model!r} is not defined under models "
                f"(defined: {', '.join(models) or 'none'})"
            )
        for task in runs or {}:
            if task not in tasks:
                problems.append(
                    f"experiments.{model}.{task}: task {task!r} is not defined under tasks "
                    f"(defined: {', '.join(tasks) or 'none'})"
                )
    for section in ("experiments", "external_runs"):
        for model in config.get(section) or {}:
            if ((models.get(model) or {}).get("analyse_only")) is True:
                problems.append(
                    f"{section}.{model}: model {model!r} is analyse_only (Analysing and its "
                    "figures only); drop analyse_only to train or evaluate it"
                )
    for model in (config.get("select") or {}).get("imports") or {}:
        if model not in models:
            problems.append(
                f"select.imports.{model}: model {model!r} is not defined under models "
                f"(defined: {', '.join(models) or 'none'})"
            )
    if problems:
        raise LokiInputError("invalid config:\n  " + "\n  ".join(problems))


def validate_config(config: dict[str, Any], *, set_defaults: bool = True) -> dict[str, Any]:
    """Check a whole pipeline config (schema, then cross-references) and fill its defaults.

    The Snakemake workflow calls this on its ``config`` before planning any job.
    """
    if not isinstance(config, dict):
        raise LokiInputError(f"invalid config: expected a mapping of keys, got {config!r}")
    check(config)
    if set_defaults:
        fill_defaults(config)
    check_experiments(config)
    from loki_pipeline.runs import check_external_runs  # light, but imports the method grammar
    from loki_pipeline.tasks import check_task_configs, task_names

    problems = check_task_configs(config)
    if problems:
        raise LokiInputError("invalid config:\n  " + "\n  ".join(problems))
    check_external_runs(config, task_names(config))
    return config


def validate_training(training: Any, *, prefix: str = "training") -> dict[str, Any]:
    """Check a ``training`` block (defaults, ``threads``, ``tasks``, ``methods``) on its own.

    ``loki train --config`` and :func:`loki_pipeline.train.settings.resolve_settings` use it,
    so an override such as ``batch_size: 2.7`` fails here, naming its key, not inside the loop.
    """
    if training is None:
        return {}
    check(training, "/properties/training", prefix=prefix)
    return training


def merge_configs(
    base: Mapping[str, Any], over: Mapping[str, Any], schema: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``over`` deep-merged onto ``base`` (a new dict; neither is changed): mappings merge key
    by key, ``over`` winning; lists, scalars and null replace. A key whose schema says
    ``x-merge: replace`` (``models``, ``experiments``: what runs is the extending file's to say,
    so the base's model does not join a run that names its own) is replaced whole."""
    schema = _resolve(load_schema() if schema is None else schema)
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        sub = props.get(key, extra if isinstance(extra, Mapping) else {})
        sub = _resolve(sub) if isinstance(sub, Mapping) else {}
        old = out.get(key)
        if (
            isinstance(value, Mapping)
            and isinstance(old, Mapping)
            and sub.get("x-merge") != "replace"
        ):
            out[key] = merge_configs(old, value, sub)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _find(name: str, dirs: Iterable[Path]) -> Path:
    path = Path(name)
    candidates = [path] if path.is_absolute() else [Path(d) / path for d in dirs]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise LokiInputError(f"extends: {name!r}: no such config file (looked for {looked})")


def resolve_extends(
    config: Mapping[str, Any], dirs: Iterable[str | Path] = (".",)
) -> dict[str, Any]:
    """The config ``config`` names in ``extends`` (a path relative to one of ``dirs``: the
    extending file's folder first, then the working directory), with ``config`` merged over it
    (:func:`merge_configs`); a base that itself extends another is resolved first, relative to
    its own folder. Without ``extends`` the config is returned as it is (a copy)."""
    import yaml

    config = dict(config)
    seen: list[Path] = []
    dirs = list(dirs)
    while config.get("extends"):
        path = _find(str(config["extends"]), dirs).resolve()
        if path in seen:
            chain = " -> ".join(map(str, [*seen, path]))
            raise LokiInputError(f"extends: {chain}: the configs extend each other in a loop")
        seen.append(path)
        try:
            base = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise LokiInputError(f"extends: {path}: cannot read it as YAML ({exc})") from exc
        if not isinstance(base, dict):
            raise LokiInputError(f"extends: {path}: expected a mapping of keys, got {base!r}")
        # results_dir is each file's own (results_dir.py): never inherited from a base
        merged = merge_configs(
            {k: v for k, v in base.items() if k not in ("extends", "results_dir")}, config
        )
        merged["extends"] = base.get("extends")  # the base's own base, if any, is next
        config, dirs = merged, [path.parent, Path(".")]
    config["extends"] = str(seen[0]) if seen else config.get("extends")
    return config


def apply_extends(config: dict[str, Any], config_files: Iterable[str | Path]) -> dict[str, Any]:
    """Resolve ``extends`` in place (the workflow's ``config`` is a global dict): paths are
    looked up beside the given config files (the last first), then in the working directory."""
    dirs = [Path(f).parent for f in reversed(list(config_files))] + [Path(".")]
    resolved = resolve_extends(config, dirs)
    config.clear()
    config.update(resolved)
    return config
