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
from collections.abc import Iterable
from dataclasses import dataclass

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
