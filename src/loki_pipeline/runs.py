"""Run names: what the Evaluating and Reporting stages call each model they score.

A run is one model evaluated against a base model (``results/eval/{model}/{run}/``)::

    base                         the untuned base model
    {task}-{method}              a training run (method: ``train.methods`` grammar)
    suppress-{strategy}_q{q}     a suppression ablation (the LoKI paper's Table 5)
    anything else                an external run: a released model, evaluated as it is

Names are made by :func:`trained_run` / :func:`suppress_run` and read back by :func:`parse_run`,
here only, so the rules, the tables and the figure agree. A task name may hold '-'
(``my-task-loki_q10``), so parsing takes the known task names; method names never hold '-'.
Light (no torch) so that the Snakemake rules import it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from loki_pipeline.errors import LokiInputError
from loki_pipeline.io import check_name
from loki_pipeline.select.naming import Q_PATTERN, STRATEGIES, selection_stem
from loki_pipeline.train.methods import Method, parse_method

BASE = "base"
SUPPRESS_PREFIX = "suppress-"

_SUPPRESS = re.compile(rf"(?P<strategy>{'|'.join(STRATEGIES)})_q(?P<q>{Q_PATTERN})")


@dataclass(frozen=True)
class Run:
    """A parsed run name. ``kind``: 'base', 'trained' (``task`` and ``method`` set), 'suppress'
    (``strategy`` and ``q`` set) or 'external'."""

    name: str
    kind: str
    task: str | None = None
    method: Method | None = None
    strategy: str | None = None
    q: float | None = None

    @property
    def label(self) -> str:
        """The name within one task's figure: the method of a training run, else the name."""
        return self.method.name if self.method is not None else self.name


def trained_run(task: str, method: str) -> str:
    """``{task}-{method}``: the run of a training run's merged checkpoint."""
    return f"{task}-{method}"


def suppress_run(strategy: str, q: float | int | str) -> str:
    """``suppress-{strategy}_q{q}``: the run of a suppression ablation."""
    return SUPPRESS_PREFIX + selection_stem(strategy, q)


def parse_run(name: str, tasks: Iterable[str]) -> Run:
    """Parse a run name, ``tasks`` being the known task names; ``LokiInputError`` if ``name``
    cannot be a run (it becomes a folder name).

    ``{task}-{method}`` is a training run only for a known task and a valid method; a name of no
    kind is an external run.
    """
    check_name(name, "run name")
    if name == BASE:
        return Run(name, "base")
    if name.startswith(SUPPRESS_PREFIX):
        m = _SUPPRESS.fullmatch(name[len(SUPPRESS_PREFIX) :])
        if m and 0 < float(m["q"]) < 100:
            return Run(name, "suppress", strategy=m["strategy"], q=float(m["q"]))
    for task in sorted(tasks, key=len, reverse=True):
        prefix = f"{task}-"
        if name.startswith(prefix):
            try:
                method = parse_method(name[len(prefix) :])
            except LokiInputError:
                continue
            return Run(name, "trained", task=task, method=method)
    return Run(name, "external")


# External runs and the runs of a table, from a validated config (``external_runs``, ``tables``).
def external_runs(config: Mapping[str, Any], model: str, task: str | None = None) -> dict[str, str]:
    """``external_runs`` of ``model``: run name -> source, for one ``task`` or (None) every task,
    in the config's order."""
    by_task = (config.get("external_runs") or {}).get(model) or {}
    runs: dict[str, str] = {}
    for name, entries in by_task.items():
        if task is None or name == task:
            runs.update(entries or {})
    return runs


def table_runs(config: Mapping[str, Any], model: str, task: str) -> list[str]:
    """Rows of one (model, task) table: ``base``, the training runs of ``experiments`` in the
    config's order, then the external runs of ``external_runs``."""
    methods = ((config.get("experiments") or {}).get(model) or {}).get(task) or []
    return [BASE, *(trained_run(task, m) for m in methods), *external_runs(config, model, task)]


def table_tasks(config: Mapping[str, Any], model: str) -> list[str]:
    """The tasks that get tables for ``model``: trained or with external runs, sorted."""
    trained = ((config.get("experiments") or {}).get(model) or {}).keys()
    external = ((config.get("external_runs") or {}).get(model) or {}).keys()
    return sorted({*trained, *external})


def table_reference(config: Mapping[str, Any], model: str, task: str) -> str | None:
    """The run a task table is relative to: ``tables.reference[task]``, else for the reranker
    its full fine-tune when trained (the paper's Table 3 reports Δ against a reference row),
    else None."""
    named = ((config.get("tables") or {}).get("reference") or {}).get(task)
    if named is not None:
        return named
    full = trained_run(task, "full")
    return full if task == "reranker" and full in table_runs(config, model, task) else None


def suppress_runs(config: Mapping[str, Any], model: str) -> list[str]:
    """Suppression ablation runs of ``model`` from config ``suppress``: a list of
    ``{strategy, q}`` or a mapping ``{strategies: [...], q: [...]}``; none for an
    ``analyse_only`` model."""
    spec = config.get("suppress") or []
    if ((config.get("models") or {}).get(model) or {}).get("analyse_only"):
        return []
    if isinstance(spec, Mapping):
        spec = [
            {"strategy": s, "q": q} for s in spec.get("strategies", []) for q in spec.get("q", [])
        ]
    return [suppress_run(item["strategy"], item["q"]) for item in spec]


def run_tasks(config: Mapping[str, Any], model: str, run: str, tasks: Iterable[str]) -> list[str]:
    """Tasks whose performance a run's ``task.json`` reports (``tasks``: the known task names):
    a training run's own task; an external run's tasks of ``external_runs``; any other run
    every task with a table for the model (else every configured task)."""
    parsed = parse_run(run, tasks)
    if parsed.kind == "trained":
        return [parsed.task]
    tabled = table_tasks(config, model)
    own = [t for t in tabled if run in external_runs(config, model, t)]
    return own or tabled or sorted(config.get("tasks") or {})


def check_external_runs(config: Mapping[str, Any], tasks: Iterable[str]) -> None:
    """``external_runs`` names defined models and tasks, each run name is an external run (no
    other kind) with one source per model, and every ``tables.reference`` is a row of each
    table of its task; ``LokiInputError`` listing every problem. ``tasks``: every task name a
    run name may start with (the schema's)."""
    tasks = list(tasks)
    models, defined = config.get("models") or {}, config.get("tasks") or {}
    problems = []
    for model, by_task in (config.get("external_runs") or {}).items():
        if model not in models:
            problems.append(f"external_runs.{model}: model {model!r} is not defined under models")
        seen: dict[str, tuple[str, str]] = {}
        for task, runs in (by_task or {}).items():
            if task not in defined:
                problems.append(
                    f"external_runs.{model}.{task}: task {task!r} is not defined under tasks"
                )
            for name, source in (runs or {}).items():
                key = f"external_runs.{model}.{task}.{name}"
                kind = parse_run(name, tasks).kind
                if kind != "external":
                    problems.append(
                        f"{key}: {name!r} reads as a {kind} run name; name a released model "
                        "otherwise (e.g. 'toolace-8b-released')"
                    )
                if name in seen and seen[name][1] != source:
                    problems.append(
                        f"{key}: run {name!r} already has source {seen[name][1]!r} "
                        f"(external_runs.{model}.{seen[name][0]}); one run, one checkpoint"
                    )
                seen.setdefault(name, (task, source))
    for task, reference in ((config.get("tables") or {}).get("reference") or {}).items():
        for model in models:
            if task not in table_tasks(config, model):
                continue
            rows = table_runs(config, model, task)
            if reference not in rows:
                problems.append(
                    f"tables.reference.{task}: run {reference!r} is not a row of the {task} "
                    f"table of model {model!r} (rows: {', '.join(rows)})"
                )
    if problems:
        raise LokiInputError("invalid config:\n  " + "\n  ".join(problems))
