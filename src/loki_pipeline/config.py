"""The pipeline config as a whole: the schema (:mod:`loki_pipeline.schemas`) plus what it cannot
say, checked against the registries (every experiment's model and task defined, each task's
block, external runs), ``extends:`` and the config merge, and the prompt files the plan reads.

The Snakemake workflow (``workflow/rules/common.smk``) and ``loki plan`` both call it, so
``loki plan`` refuses what the workflow refuses. Light (no torch): the Snakefile imports it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from loki_pipeline.data.kva_sets import local_dataset_file
from loki_pipeline.errors import LokiInputError
from loki_pipeline.runs import check_external_runs
from loki_pipeline.safe_yaml import clip, load_yaml
from loki_pipeline.schemas import check, fill_defaults, load_schema, resolve_ref
from loki_pipeline.tasks.registry import check_task_configs, task_names


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
    problems = check_task_configs(config)
    if problems:
        raise LokiInputError("invalid config:\n  " + "\n  ".join(problems))
    check_external_runs(config, task_names(config))
    return config


def merge_configs(
    base: Mapping[str, Any], over: Mapping[str, Any], schema: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``over`` deep-merged onto ``base`` (a new dict; neither is changed): mappings merge key
    by key, ``over`` winning; lists, scalars and null replace. A key whose schema says
    ``x-merge: replace`` (``models``, ``experiments``: what runs is the extending file's to say,
    so the base's model does not join a run that names its own) is replaced whole."""
    schema = resolve_ref(load_schema() if schema is None else schema)
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        sub = props.get(key, extra if isinstance(extra, Mapping) else {})
        sub = resolve_ref(sub) if isinstance(sub, Mapping) else {}
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
    config = dict(config)
    seen: list[Path] = []
    dirs = list(dirs)
    while config.get("extends"):
        path = _find(str(config["extends"]), dirs).resolve()
        if path in seen:
            chain = " -> ".join(map(str, [*seen, path]))
            raise LokiInputError(f"extends: {chain}: the configs extend each other in a loop")
        seen.append(path)
        base = load_yaml(path, "extends:")
        if not isinstance(base, dict):
            raise LokiInputError(f"extends: {path}: expected a mapping of keys, got {clip(base)}")
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
    config_files = list(config_files)
    for path in config_files:  # Snakemake read them leniently: duplicate keys, anchor bombs
        if Path(path).is_file():
            load_yaml(path)
    dirs = [Path(f).parent for f in reversed(config_files)] + [Path(".")]
    resolved = resolve_extends(config, dirs)
    config.clear()
    config.update(resolved)
    return config


def check_prompt_files(config: Mapping[str, Any]) -> None:
    """A KVA prompt set's local file (``kva.dataset``, ``kva.compare_dataset``) must exist.

    As a missing input alone it would not stop a run: Snakemake plans no job for shards that
    already exist, so they would be gathered as the KVA of a file that is not there.
    """
    kva = config.get("kva") or {}
    for key in ("dataset", "compare_dataset"):
        if kva.get(key) is None:
            continue
        source = local_dataset_file(kva[key])
        if source is not None and not Path(source).is_file():
            raise LokiInputError(
                f"kva.{key}.source: {source} does not exist (relative paths are read from "
                f"the working directory, {Path.cwd()})"
            )
