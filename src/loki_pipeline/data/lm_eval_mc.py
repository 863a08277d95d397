"""An lm-eval multiple-choice task as a KVA prompt set (``kva.dataset.format: lm_eval``).

``source`` names the task three ways: a task of lm-eval's registry (``medmcqa``: its data
from the hub), the path of a task YAML of the user's own (its folder is lm-eval's include
path, so its ``include:`` and ``!function`` files resolve as lm-eval resolves them), or
``local:<task>``: a task the project ships local items for (``data/lm_eval``, as
``evaluate.general.source: local`` uses them; ``local:hellaswag``).

The documents are lm-eval's own: the task's evaluation split (its test split, else its
validation split, as lm-eval scores it), after its ``process_docs``, rendered by its
``doc_to_text`` and ``doc_to_choice`` into the LoKI paper's MMLU prompt
(:func:`~loki_pipeline.data.mmlu.choice_prompt`: the task name as subject, the question, the
lettered options, ``Answer:``). Where the options are the letters themselves (MedMCQA, lm-eval's
MMLU), ``doc_to_text`` already lists the options and ends in ``Answer:``; it follows the
prompt's first line as it is. Tasks whose ``doc_to_text`` is not the question (WinoGrande's
"multiple inputs") and tasks that are not multiple-choice are refused.
"""

from __future__ import annotations

import functools
import itertools
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from loki_pipeline.data.kva_prompt import number_and_cap
from loki_pipeline.data.mmlu import PROMPT_HEADER, answer_letters, choice_prompt, subject_title
from loki_pipeline.data.prompts import PromptItem
from loki_pipeline.errors import LokiInputError

log = logging.getLogger(__name__)

LOCAL_PREFIX = "local:"
YAML_SUFFIXES = (".yaml", ".yml")


def render_doc(task_name: str, text: Any, choices: Any, where: str) -> str:
    """The KVA prompt of one document (``doc_to_text``, ``doc_to_choice``), see the module."""
    if not isinstance(text, str):
        raise LokiInputError(
            f"{where}: doc_to_text gave {type(text).__name__}, not the question text (a "
            "'multiple inputs' task such as winogrande); format lm_eval takes tasks whose "
            "doc_to_text is the question and doc_to_choice the options"
        )
    if not isinstance(choices, (list, tuple)) or not all(isinstance(c, str) for c in choices):
        raise LokiInputError(f"{where}: doc_to_choice gave {choices!r}, not a list of options")
    subject = subject_title(task_name)
    letters = [chr(ord("A") + i) for i in range(len(choices))]
    if [c.strip() for c in choices] == letters:  # the text lists the options itself
        header = PROMPT_HEADER.format(subject=subject, letters=answer_letters(len(choices)))
        return f"{header}{text.strip()}\n"
    return choice_prompt(subject, text.strip(), choices)


@functools.cache
def _registry() -> Any:
    """lm-eval's ``TaskManager`` of its installed tasks (indexing them takes seconds; once)."""
    from lm_eval.tasks import TaskManager

    return TaskManager()


def _manager(source: str, scratch: str) -> tuple[Any, str]:
    """lm-eval's ``TaskManager`` that knows ``source``, and the task's name."""
    from lm_eval.tasks import TaskManager

    if source.startswith(LOCAL_PREFIX):
        from loki_pipeline.data.lm_eval_items import (
            LOCAL_DATA_FILES,
            check_local_data,
            default_data_dir,
            write_local_tasks,
        )

        name = source[len(LOCAL_PREFIX) :]
        if name not in LOCAL_DATA_FILES:
            raise LokiInputError(
                f"kva.dataset.source {source!r}: the project ships local items for "
                f"{', '.join(LOCAL_DATA_FILES)} only"
            )
        data_dir = check_local_data(default_data_dir(), [name])
        include = write_local_tasks(Path(scratch) / "tasks", data_dir, [name])
        return TaskManager(include_path=str(include), include_defaults=False), name
    if source.endswith(YAML_SUFFIXES):
        path = Path(source).resolve()
        if not path.is_file():
            raise LokiInputError(f"lm-eval task file {source} does not exist")
        manager = TaskManager(include_path=str(path.parent), include_defaults=False)
        for name, entry in manager.task_index.items():
            if entry.yaml_path is not None and Path(entry.yaml_path).resolve() == path:
                return manager, name
        raise LokiInputError(f"{source}: defines no lm-eval task (it needs a 'task:' key)")
    manager = _registry()
    if source in manager.all_groups or source in manager.all_tags:
        raise LokiInputError(
            f"kva.dataset.source {source!r}: an lm-eval group of tasks; name one of its tasks"
        )
    if source not in manager.all_tasks:
        raise LokiInputError(
            f"kva.dataset.source {source!r}: not an lm-eval task name (nor a task .yaml file "
            f"or {LOCAL_PREFIX}<task>); `lm-eval ls tasks` lists the names"
        )
    return manager, source


def _load_task(source: str, scratch: str) -> tuple[str, Any]:
    manager, name = _manager(source, scratch)
    loaded = manager.load([name])
    tasks = loaded["tasks"]
    if loaded["groups"] or len(tasks) != 1:
        raise LokiInputError(
            f"lm-eval {name!r} is a group of {len(tasks)} tasks; name one task "
            f"({', '.join(sorted(tasks)[:5])}{', ...' if len(tasks) > 5 else ''})"
        )
    task = next(iter(tasks.values()))
    kind = task.config.output_type
    if kind != "multiple_choice":
        raise LokiInputError(
            f"lm-eval task {name!r} is {kind}; format lm_eval takes multiple-choice tasks "
            "(output_type: multiple_choice)"
        )
    if not (task.has_test_docs() or task.has_validation_docs()):
        raise LokiInputError(f"lm-eval task {name!r} has neither a test nor a validation split")
    return name, task


def _entries(source: str, name: str, task: Any, limit: int | None) -> Iterator[tuple]:
    for i, doc in enumerate(itertools.islice(task.eval_docs, limit)):
        where = f"{source} (lm-eval task {name}) document {i}"
        content = render_doc(name, task.doc_to_text(doc), task.doc_to_choice(doc), where)
        yield where, None, name, (("user", content),)


def load_lm_eval_mc(source: str, *, max_per_subject: int | None = None) -> list[PromptItem]:
    """The first ``max_per_subject`` (all when None) documents of the task as KVA prompts;
    ids ``<task>/<n>``, subject the task's name."""
    with tempfile.TemporaryDirectory(prefix="loki-kva-lm-eval-") as scratch:
        name, task = _load_task(str(source), scratch)
        entries = _entries(str(source), name, task, max_per_subject)
        kept = number_and_cap(entries, name=str(source), max_per_subject=max_per_subject)
    log.info("lm-eval task %s: %d documents as KVA prompts", name, len(kept))
    return [PromptItem(qid, subject, messages) for qid, subject, messages in kept]
