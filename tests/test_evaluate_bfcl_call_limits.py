"""BFCL multi-turn calls: bounded where the alarm cannot reach (C-level arithmetic), numeric
contexts restored after each call, and a time budget per item that fails the item when spent."""

from __future__ import annotations

import decimal
import importlib
import inspect
import time
from pathlib import Path

import pytest

from loki_pipeline.evaluate import bfcl_call_limits as limits
from loki_pipeline.evaluate import bfcl_multi_turn as mt

WHEEL = (
    Path(__file__).resolve().parents[1]
    / "resources/cache/wheels/bfcl_eval-2026.3.23-py3-none-any.whl"
)
pytestmark = pytest.mark.skipif(
    not WHEEL.is_file(),
    reason="bfcl-eval wheel not in resources/cache (tests never download): "
    "`pip download bfcl-eval==2026.3.23 --no-deps -d resources/cache/wheels`",
)
MATH = "bfcl_eval.eval_checker.multi_turn_eval.func_source_code.math_api"


@pytest.fixture
def math_methods():
    """bfcl-eval's own ``MathAPI``: its public methods by name, as the executor maps them."""
    mt.bfcl_modules(WHEEL)
    api = importlib.import_module(MATH).MathAPI()
    return dict(inspect.getmembers(api, predicate=inspect.ismethod))


@pytest.mark.parametrize(
    "call",
    [
        "square_root(number=2, precision=1000000)",
        "square_root(2, 1000000)",  # positional: matched to the parameter by name
        "logarithm(value=7, base=3, precision=1000000)",
        "power(base=1000000, exponent=1000000)",
    ],
)
def test_costly_arguments_are_refused_before_the_call(math_methods, call):
    """Each of these ran for seconds to minutes in one C-level operation, past the alarm."""
    start = time.monotonic()
    result = mt.call_method(math_methods, call)
    assert result.startswith("Error during execution") and "refused" in result
    assert time.monotonic() - start < 2


def test_ordinary_arguments_still_compute(math_methods):
    assert mt.call_method(math_methods, "power(base=2, exponent=10)") == '{"result": 1024}'
    root = mt.call_method(math_methods, "square_root(number=2, precision=30)")
    assert root.startswith('{"result": 1.41421356') or "1.41421356237309504880168872" in root
    log = mt.call_method(math_methods, "logarithm(value=8, base=2, precision=40)")
    assert "3.0" in log


def test_numeric_contexts_are_restored_after_each_call(math_methods):
    import mpmath

    prec, dps = decimal.getcontext().prec, mpmath.mp.dps
    log = mt.call_method(math_methods, "logarithm(value=10, base=3, precision=60)")
    assert len(log.split(".")[1].rstrip('"}')) >= 55  # the call itself ran at 60 digits
    mt.call_method(math_methods, "square_root(number=3, precision=70)")
    assert decimal.getcontext().prec == prec and mpmath.mp.dps == dps
    # a later call at the default precision gets the default, not the previous call's
    assert mt.call_method(math_methods, "logarithm(value=10, base=3, precision=15)") == (
        mt.call_method(math_methods, "logarithm(value=10, base=3, precision=15)")
    )
    assert decimal.getcontext().prec == prec and mpmath.mp.dps == dps


def test_an_item_whose_calls_use_up_their_budget_fails(monkeypatch):
    """Every call is stopped at the per-call limit; together they exhaust the item's budget,
    the conversation stops and the checker's verdict is a failure, not a hang."""
    monkeypatch.setattr(mt, "CALL_SECONDS", 0.2)
    monkeypatch.setattr(limits, "ITEM_SECONDS", 0.5)
    (item,) = mt.load_multi_turn(WHEEL, ["multi_turn_base"], ids=["multi_turn_base_1"])
    fs = importlib.import_module(
        "bfcl_eval.eval_checker.multi_turn_eval.func_source_code.gorilla_file_system"
    )

    def spin(self, a=False):
        while True:
            pass

    monkeypatch.setattr(fs.GorillaFileSystem, "ls", spin)
    answers = iter(["[ls(a=True)]"] * 50)
    start = time.monotonic()
    turns = mt.run_conversation(item, lambda messages: next(answers))
    assert turns.out_of_time and turns.force_quit
    assert 3 <= sum(len(t) for t in turns.answers) <= 4  # 0.2 s each, 0.5 s in all
    checker, _ = mt.bfcl_modules(WHEEL)
    verdict = mt.check_conversation(checker, item, turns)
    assert verdict == {"valid": False, "error_type": "multi_turn:out_of_time"}
    assert time.monotonic() - start < 10
    # judging has its own budget: answers that were never run out of time still cannot hang it
    verdict = mt.check_conversation(checker, item, [["[ls(a=True)]"] * 5] * 4)
    assert verdict == {"valid": False, "error_type": "multi_turn:out_of_time"}
