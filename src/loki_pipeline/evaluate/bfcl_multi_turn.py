"""BFCL's multi-turn categories: a conversation run turn by turn against BFCL's simulated APIs.

Inference mirrors ``bfcl_eval/model_handler/base_handler.py::inference_multi_turn_prompting``
(bfcl-eval==2026.3.23): the item's functions go into BFCL's system prompt; each turn's user
messages are appended (for ``multi_turn_miss_func``, a turn listed in ``missed_function`` gets
the held-out function docs as its user message, ``DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_
PROMPTING``); the model answers greedily, its answer is decoded, the calls are executed against
the item's simulated API instances and each result is fed back as a ``tool`` message, until an
answer decodes to no call or fails to decode; after ``MAXIMUM_STEP_LIMIT`` (20) steps in one
turn the item is force-terminated (and fails).

Judging uses bfcl-eval's own ``multi_turn_checker`` (``eval_checker/multi_turn_eval/
multi_turn_checker.py``: state and response checks per turn), fed as
``eval_checker/eval_runner.py::_evaluate_single_multi_turn_entry`` feeds it. The checker and the
simulated classes (``func_source_code/*.py``) are imported from the cached wheel itself
(``zipimport``: every ``__init__.py`` on their path is empty, and they need only the standard
library and ``mpmath``); nothing of them is copied or stubbed but one function:
bfcl-eval executes calls with ``eval`` on the call text (``multi_turn_utils.
execute_multi_turn_func_call``). Here the checker's module gets ``execute_multi_turn_func_call``
below instead, the same contract (instances per model and item, loaded from ``initial_config``,
results as strings, errors as ``"Error during execution: ..."``) without ``eval``: a call text is
parsed with ``ast`` into a name and literal arguments (the project's bounded resolver,
``bfcl.resolve_value``) and the instance's public method of that name is called with them.
Checked on bfcl-eval 2026.3.23 and 2025.6.8 (V3's data): on both, every multi-turn item's
ground truth, executed this way, passes the checker against itself (800 of 800).
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import inspect
import json
import logging
import os
import re
import sys
import zipimport
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from loki_pipeline.errors import LokiInputError
from loki_pipeline.evaluate.bfcl import (
    MAX_OUTPUT_CHARS,
    DecodeError,
    check_depth,
    decode_calls,
    is_call_list,
    resolve_value,
)
from loki_pipeline.evaluate.bfcl_call_limits import (
    ItemOutOfTime,
    check_budget,
    cost_refusal,
    item_budget,
    numeric_contexts,
    seconds_left,
    spending,
)
from loki_pipeline.evaluate.bfcl_data import (  # MULTI_TURN: re-exported
    DATA_DIR,
    MULTI_TURN,
    bfcl_messages,
    check_categories,
    json_lines,
    load_single_turn,
    member,
)
from loki_pipeline.time_limit import time_limit

log = logging.getLogger(__name__)

#: bfcl_eval/constants/default_prompts.py: steps per turn before the item is force-terminated.
MAXIMUM_STEP_LIMIT = 20
#: bfcl_eval/constants/default_prompts.py (prompting models).
ADDITIONAL_FUNCTION_PROMPT = (
    "{functions}\nI have updated some more functions you can choose from. What about now?"
)
#: bfcl-eval refuses these method names before its eval (multi_turn_utils.py); so does this.
BLOCKED_NAMES = ("kill", "exit", "quit", "remove", "unlink", "popen", "Popen", "run")
#: Largest integer argument passed to a simulated method. The simulated APIs compute with what
#: they get (``MathAPI.power`` is ``base**exponent``, ``square_root`` sets the decimal precision),
#: so a hostile answer such as ``power(base=9, exponent=10**4000)`` would run for hours; the
#: items' own arguments are smaller (the largest in 2026.3.23's ground truth is 987654). A call
#: over it gets an error result, as a call the API rejects would. The arguments that drive
#: C-level arithmetic (a ``precision``, an integer power) have tighter bounds
#: (``bfcl_call_limits.cost_refusal``); Python-level loops are stopped by ``CALL_SECONDS``.
MAX_CALL_INT = 10**6
#: Wall-clock limit of one simulated call (SIGALRM, main thread on POSIX; elsewhere none): it
#: interrupts Python code, not a single long C operation, hence the argument bounds too. An
#: item's calls together have ``bfcl_call_limits.ITEM_SECONDS``.
CALL_SECONDS = 5.0
_CHECKER = "bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker"
#: holds CLASS_FILE_PATH_MAPPING and STATELESS_CLASSES in every release (defined there up to
#: V3's 2025.6.x, imported there from constants/executable_backend_config.py since)
_UTILS = "bfcl_eval.eval_checker.multi_turn_eval.multi_turn_utils"


# --------------------------------------------------------------------------------------------
# bfcl-eval's own modules, from the wheel


def bfcl_modules(wheel: str | Path) -> tuple[ModuleType, ModuleType]:
    """``(multi_turn_checker, multi_turn_utils)`` imported from the wheel (zipimport).

    The checker module's ``execute_multi_turn_func_call`` is replaced by this module's (no
    ``eval``); the rest is bfcl-eval's code as shipped. Raises ``LokiInputError`` when another
    ``bfcl_eval`` is already imported in this process or the wheel lacks the modules.
    """
    wheel = str(Path(wheel).resolve())
    loaded = sys.modules.get("bfcl_eval")
    if loaded is not None and not str(getattr(loaded, "__file__", "")).startswith(wheel):
        raise LokiInputError(
            f"a bfcl_eval package is already imported from {loaded.__file__}; multi-turn "
            f"judging imports it from {wheel} only"
        )
    try:
        zipimport.zipimporter(wheel)
    except zipimport.ZipImportError as err:
        raise LokiInputError(f"{wheel}: not an importable bfcl-eval wheel ({err})") from None
    if wheel not in sys.path:
        sys.path.insert(0, wheel)
    import importlib

    try:
        checker = importlib.import_module(_CHECKER)
        utils = importlib.import_module(_UTILS)
    except ImportError as err:
        raise LokiInputError(
            f"{wheel}: cannot import bfcl-eval's multi-turn checker ({err})"
        ) from None
    checker.execute_multi_turn_func_call = execute_multi_turn_func_call
    return checker, utils


# --------------------------------------------------------------------------------------------
# calls: text <-> (name, args, kwargs), executed without eval


def execution_strings(decoded: Sequence[Mapping[str, Mapping[str, Any]]]) -> list[str]:
    """Decoded calls as bfcl-eval's call text (``model_handler/utils.py::
    decoded_output_to_execution_list`` with ``parse_nested_value``): ``name(k=repr(v), ...)``."""

    def value(v: Any) -> str:
        if isinstance(v, dict):
            if v and all(isinstance(x, dict) for x in v.values()):
                name, args = next(iter(v.items()))
                return f"{name}({', '.join(f'{k}={value(a)}' for k, a in args.items())})"
            return "{" + ", ".join(f"'{k}': {value(x)}" for k, x in v.items()) + "}"
        return repr(v)

    return [
        f"{name}({', '.join(f'{k}={value(v)}' for k, v in args.items())})"
        for call in decoded
        for name, args in call.items()
    ]


def parse_call(text: str) -> tuple[str, list[Any], dict[str, Any]]:
    """``(name, positional args, keyword args)`` of one call text, read with ``ast`` only.

    Arguments are literals (the AST decoder's ``resolve_value``: numbers, strings, lists,
    dicts; a nested call stays data). Raises ``DecodeError`` for anything that is not one call
    of a plain name, or over the decoder's size and depth bounds.
    """
    if len(text) > MAX_OUTPUT_CHARS:
        raise DecodeError(f"call of {len(text)} characters, over {MAX_OUTPUT_CHARS}")
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise DecodeError(f"not a call: {err}") from None
    check_depth(node)
    if not isinstance(node, ast.Call):
        raise DecodeError(f"not a call: {text[:80]!r}")
    if not isinstance(node.func, ast.Name):
        raise DecodeError(f"{ast.unparse(node.func)!r} is not a plain function name")
    if any(isinstance(a, ast.Starred) for a in node.args) or any(
        k.arg is None for k in node.keywords
    ):
        raise DecodeError("*args/**kwargs are not literal arguments")
    args = [resolve_value(a) for a in node.args]
    kwargs = {k.arg: resolve_value(k.value) for k in node.keywords}
    return node.func.id, args, kwargs


def _ints_ok(value: Any) -> bool:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_CALL_INT:
            return False
        if isinstance(v, (list, tuple, set)):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
    return True


def _result_text(result: Any) -> str:
    """bfcl-eval's stringification of a method's return value."""
    if type(result) is str:
        return result
    if type(result) is dict:
        try:
            return json.dumps(result)
        except Exception:  # noqa: BLE001 - bfcl-eval falls back on str for any failure
            return str(result)
    return str(result)


def call_method(methods: Mapping[str, Any], text: str) -> str:
    """Execute one call text on the public methods ``methods`` (name -> bound method)."""
    try:
        name, args, kwargs = parse_call(text)
        if name in BLOCKED_NAMES:
            raise PermissionError(f"Function call {name} is not allowed.")
        if name not in methods:
            raise NameError(f"name '{name}' is not defined")
        if not _ints_ok([args, kwargs]):
            raise ValueError(f"integer argument over {MAX_CALL_INT} refused")
        refusal = cost_refusal(methods[name], args, kwargs)
        if refusal:
            raise ValueError(refusal)
        check_budget()
        left = seconds_left()
        seconds = CALL_SECONDS if left is None else max(min(CALL_SECONDS, left), 0.001)
        stopped = f"call over {seconds} s stopped"
        with spending(), numeric_contexts(), time_limit(seconds, stopped):
            return _result_text(methods[name](*args, **kwargs))
    except ItemOutOfTime:
        raise
    except Exception as err:  # noqa: BLE001 - as bfcl-eval: any failure is the call's result
        return f"Error during execution: {err}"


#: instance name -> instance; bfcl-eval keeps them in its module globals for the whole run.
_INSTANCES: dict[str, Any] = {}


def reset_instances() -> None:
    """Forget every simulated instance (done before each item; names never repeat within one)."""
    _INSTANCES.clear()


def execute_multi_turn_func_call(
    func_call_list: list[str],
    initial_config: dict,
    involved_classes: list,
    model_name: str,
    test_entry_id: str,
    long_context: bool = False,
    is_evaL_run: bool = False,  # noqa: N803 - bfcl-eval's keyword
) -> tuple[list[str], dict]:
    """bfcl-eval's ``multi_turn_utils.execute_multi_turn_func_call``, calls dispatched by name.

    The same instances (named by model, item and class, created and loaded with the item's
    ``initial_config`` on first use, kept across turns), the same method mapping (every public
    method of every involved class), the same result strings; ``call_method`` instead of
    ``eval``.
    """
    import importlib

    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_utils import (
        CLASS_FILE_PATH_MAPPING,
        STATELESS_CLASSES,
    )

    if is_evaL_run:
        model_name += "_eval"
    methods: dict[str, Any] = {}
    instances: dict[str, Any] = {}
    for class_name in involved_classes:
        if class_name not in CLASS_FILE_PATH_MAPPING:
            raise LokiInputError(f"BFCL item {test_entry_id}: unknown class {class_name!r}")
        key = re.sub(r"[-./:]", "_", f"{model_name}_{test_entry_id}_{class_name}_instance")
        if key not in _INSTANCES:
            module = importlib.import_module(CLASS_FILE_PATH_MAPPING[class_name])
            instance = getattr(module, class_name)()
            if class_name not in STATELESS_CLASSES:
                instance._load_scenario(
                    copy.deepcopy(initial_config.get(class_name, {})), long_context=long_context
                )
            _INSTANCES[key] = instance
        instances[class_name] = _INSTANCES[key]
        for name, method in inspect.getmembers(_INSTANCES[key], predicate=inspect.ismethod):
            if not name.startswith("_"):
                methods[name] = method
    return [call_method(methods, text) for text in func_call_list], instances


# --------------------------------------------------------------------------------------------
# items


def load_bfcl(
    wheel: str | os.PathLike,
    categories: list[str],
    *,
    max_per_category: int | None = None,
    multi_turn_ids: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Items ``{"id", "category", "messages", "function", "ground_truth"}`` from the wheel.

    ``messages`` is the first (only) turn of ``question``; ``ground_truth`` is ``None`` for
    relevance and irrelevance. The first ``max_per_category`` items of each file, in file order.
    Multi-turn categories give :func:`load_multi_turn`'s items (with ``turns``),
    plus ``wheel``, the path their checker is imported from; ``multi_turn_ids`` picks them.
    """
    check_categories(categories)
    multi = [c for c in categories if c in MULTI_TURN]
    if multi_turn_ids and not multi:
        raise LokiInputError(
            f"tasks.toolace.eval.bfcl.multi_turn_ids {multi_turn_ids} given, but no multi-turn "
            f"category among {categories}"
        )
    if multi:
        loaded = {
            it["id"]: {**it, "wheel": str(wheel)}
            for it in load_multi_turn(
                wheel, multi, max_per_category=max_per_category, ids=multi_turn_ids
            )
        }
        single = [c for c in categories if c not in MULTI_TURN]
        items = load_single_turn(wheel, single, max_per_category=max_per_category) if single else []
        by_category: dict[str, list[dict[str, Any]]] = {}
        for it in [*items, *loaded.values()]:
            by_category.setdefault(it["category"], []).append(it)
        return [it for c in categories for it in by_category.get(c, [])]
    return load_single_turn(wheel, categories, max_per_category=max_per_category)


def load_multi_turn(
    wheel: str | Path,
    categories: Iterable[str],
    *,
    max_per_category: int | None = None,
    ids: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Multi-turn items ``{"id", "category", "turns", "function", "missed_function",
    "initial_config", "involved_classes", "ground_truth"}`` read from the wheel's data.

    ``function``: the docs of every involved class (``multi_turn_func_doc/<its module>.json``, the
    file bfcl-eval's ``MULTI_TURN_FUNC_DOC_FILE_MAPPING`` names), less the held-out
    ones, which ``missed_function`` maps per turn, as bfcl-eval's
    ``utils.py::populate_test_cases_with_predefined_functions`` does. ``ids``: only these items
    (each must exist), else the first ``max_per_category`` of each file.
    """
    _, utils = bfcl_modules(wheel)
    import zipfile

    items: list[dict[str, Any]] = []
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        docs: dict[str, list[dict[str, Any]]] = {}
        for category in categories:
            question_file = member(names, DATA_DIR, category)
            answer_file = member(names, DATA_DIR + "possible_answer/", category)
            if question_file is None or answer_file is None:
                raise LokiInputError(f"{wheel}: no question or answer file for {category!r}")
            rows = json_lines(zf, question_file)
            rows = [r for r in rows if r.get("id") in ids] if ids else rows[:max_per_category]
            answers = {r["id"]: r["ground_truth"] for r in json_lines(zf, answer_file)}
            for row in rows:
                missing = [k for k in ("id", "question", "involved_classes") if k not in row]
                if missing or row["id"] not in answers:
                    raise LokiInputError(f"{question_file}: item lacks {missing or 'an answer'}")
                functions: list[dict[str, Any]] = []
                for cls in row["involved_classes"]:
                    if cls not in docs:
                        module = utils.CLASS_FILE_PATH_MAPPING.get(cls)
                        doc = f"{DATA_DIR}multi_turn_func_doc/{str(module).rsplit('.', 1)[-1]}.json"
                        if module is None or doc not in names:
                            raise LokiInputError(f"{question_file}: no function docs for {cls!r}")
                        docs[cls] = json_lines(zf, doc)
                    functions.extend(copy.deepcopy(docs[cls]))
                missed: dict[str, list[dict[str, Any]]] = {}
                for turn, held_out in (row.get("missed_function") or {}).items():
                    missed[turn] = [f for f in functions if f["name"] in held_out]
                    functions = [f for f in functions if f["name"] not in held_out]
                items.append(
                    {
                        "id": row["id"],
                        "category": category,
                        "turns": row["question"],
                        "function": functions,
                        "missed_function": missed,
                        "initial_config": row.get("initial_config") or {},
                        "involved_classes": row["involved_classes"],
                        "ground_truth": answers[row["id"]],
                    }
                )
    if ids:
        absent = sorted(set(ids) - {it["id"] for it in items})
        if absent:
            raise LokiInputError(
                f"tasks.toolace.eval.bfcl.multi_turn_ids: {absent} are not items of {list(categories)}"
            )
    return items


# --------------------------------------------------------------------------------------------
# inference and judging


@dataclasses.dataclass
class Turns:
    """The model's raw answers, per turn then per step, and whether the step limit was hit."""

    answers: list[list[str]]
    force_quit: bool
    #: the item's simulated calls used up their budget (``bfcl_call_limits.ITEM_SECONDS``)
    out_of_time: bool = False


def _decoded_strings(answer: str) -> list[str]:
    """An answer's calls as call text; ``DecodeError`` when it is not a call list."""
    decoded = decode_calls(answer)
    if not is_call_list(decoded):
        raise DecodeError("not a list of calls")
    return execution_strings(decoded)


def run_conversation(
    item: Mapping[str, Any],
    respond: Any,
    *,
    model_name: str = "loki",
    max_steps: int = MAXIMUM_STEP_LIMIT,
) -> Turns:
    """One item's conversation; ``respond(messages) -> str`` is the model (greedy answer).

    The loop of ``inference_multi_turn_prompting`` (see the module docstring); ``max_steps``
    is BFCL's ``MAXIMUM_STEP_LIMIT`` (the turn stops after ``max_steps + 1`` answers, as there).
    The item's simulated calls share one budget (``item_budget``); when it is spent the
    conversation stops with ``out_of_time`` set, and ``check_conversation`` fails the item.
    """
    reset_instances()
    answers: list[list[str]] = []
    with item_budget():
        try:
            force_quit = _converse(item, respond, model_name, max_steps, answers)
        except ItemOutOfTime as err:
            log.warning("BFCL %s: %s; counted wrong", item["id"], err)
            return Turns(answers, True, out_of_time=True)
    return Turns(answers, force_quit)


def _converse(
    item: Mapping[str, Any],
    respond: Any,
    model_name: str,
    max_steps: int,
    answers: list[list[str]],
) -> bool:
    """``run_conversation``'s loop, appending to ``answers``; whether the step limit hit."""
    long_context = "long_context" in item["category"]
    messages: list[dict[str, str]] = []
    force_quit = False
    for turn_idx, turn in enumerate(item["turns"]):
        turn = [dict(m) for m in turn]
        if str(turn_idx) in item["missed_function"]:
            held_out = item["missed_function"][str(turn_idx)]
            turn = [
                {"role": "user", "content": ADDITIONAL_FUNCTION_PROMPT.format(functions=held_out)}
            ]
        if turn_idx == 0:
            messages = bfcl_messages({"function": item["function"], "messages": turn})
        else:
            messages.extend(turn)
        steps: list[str] = []
        answers.append(steps)
        count = 0
        while True:
            answer = respond(messages)
            messages.append({"role": "assistant", "content": answer})
            steps.append(answer)
            try:
                calls = _decoded_strings(answer)
            except DecodeError:
                break
            if not calls:
                break
            results, _ = execute_multi_turn_func_call(
                calls,
                item["initial_config"],
                item["involved_classes"],
                model_name,
                item["id"],
                long_context=long_context,
            )
            messages.extend(
                {"role": "tool", "name": c, "content": r}
                for c, r in zip(calls, results, strict=True)
            )
            count += 1
            if count > max_steps:
                force_quit = True
                break
        if force_quit:
            break
    return force_quit


def check_conversation(
    checker: ModuleType, item: Mapping[str, Any], answers: Sequence[Sequence[str]] | Turns
) -> dict[str, Any]:
    """bfcl-eval's verdict on one item's answers (``{"valid": bool, ...}``), prepared as
    ``eval_runner.py::_evaluate_single_multi_turn_entry`` prepares them: a force-terminated
    conversation (fewer turns than the ground truth) fails; per step, answers that do not decode
    or decode to no call are dropped; then ``multi_turn_checker``. A conversation that ran out of
    time (``Turns.out_of_time``), or judging that does, fails with ``multi_turn:out_of_time``."""
    out_of_time = {"valid": False, "error_type": "multi_turn:out_of_time"}
    if isinstance(answers, Turns):
        if answers.out_of_time:
            return out_of_time
        answers = answers.answers
    ground_truth = item["ground_truth"]
    if len(answers) != len(ground_truth):
        return {"valid": False, "error_type": "multi_turn:force_terminated"}
    decoded: list[list[list[str]]] = []
    for steps in answers:
        turn = []
        for answer in steps:
            try:
                calls = _decoded_strings(answer)
            except DecodeError:
                continue
            if calls:
                turn.append(calls)
        decoded.append(turn)
    reset_instances()
    entry = {k: item[k] for k in ("id", "initial_config", "involved_classes")}
    try:
        with item_budget():
            return dict(
                checker.multi_turn_checker(decoded, ground_truth, entry, item["category"], "loki")
            )
    except ItemOutOfTime as err:
        log.warning("BFCL %s: judging %s; counted wrong", item["id"], err)
        return out_of_time
    finally:
        reset_instances()
