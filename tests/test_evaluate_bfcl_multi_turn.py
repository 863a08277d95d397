"""BFCL multi-turn: scripted conversations through bfcl-eval's own simulated APIs and checker,
hostile answers refused without ``eval``, and BFCL V3's overall formula by hand."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest

from loki_pipeline.evaluate import bfcl_multi_turn as mt
from loki_pipeline.evaluate.bfcl import DecodeError
from loki_pipeline.evaluate.toolace import bfcl_compose, bfcl_summary

REPO = Path(__file__).resolve().parents[1]
WHEEL = REPO / "resources/cache/wheels/bfcl_eval-2026.3.23-py3-none-any.whl"


@pytest.fixture
def no_eval(monkeypatch):
    """Any ``eval`` during the test fails it."""

    def refuse(*args, **kwargs):
        raise AssertionError("eval was called")

    monkeypatch.setattr(builtins, "eval", refuse)


def test_v3_overall_by_hand():
    """eval_runner_helper.generate_leaderboard_csv (bfcl-eval 2025.6.8), computed by hand."""
    counts = {
        "simple_python": 4, "multiple": 2, "parallel": 2, "parallel_multiple": 2,
        "irrelevance": 4, "live_simple": 6, "live_multiple": 2, "live_irrelevance": 2,
        "live_relevance": 1, "multi_turn_base": 2, "multi_turn_miss_func": 1,
    }  # fmt: skip
    sums = {
        "simple_python": 3, "multiple": 1, "parallel": 2, "parallel_multiple": 0,
        "irrelevance": 1, "live_simple": 3, "live_multiple": 2, "live_irrelevance": 1,
        "live_relevance": 1, "multi_turn_base": 1, "multi_turn_miss_func": 0,
    }  # fmt: skip
    m = bfcl_compose(sums, counts)
    non_live = (0.75 + 0.5 + 1.0 + 0.0 + 0.25) / 5  # simple = Python only (no Java/JS run)
    live = (3 + 2 + 1 + 1) / (6 + 2 + 2 + 1)  # item-weighted
    multi_turn = (0.5 + 0.0) / 2
    assert m["non_live"] == pytest.approx(non_live)
    assert m["live"] == pytest.approx(live)
    assert m["multi_turn"] == pytest.approx(multi_turn)
    assert m["overall"] == pytest.approx((non_live + live + multi_turn) / 3)
    assert m["irrelevance_detection"] == pytest.approx((0.25 + 0.5) / 2)
    assert m["relevance_detection"] == pytest.approx(1.0)
    assert m["irrelevance"] == pytest.approx(0.25)  # the category keeps its own accuracy
    assert list(m)[:4] == ["overall", "non_live", "live", "multi_turn"]
    # Java and JavaScript, when present, share the simple slot with Python.
    m2 = bfcl_compose(
        {"simple_python": 1, "simple_java": 0}, {"simple_python": 1, "simple_java": 1}
    )
    assert m2["non_live"] == pytest.approx(0.5) and m2["overall"] == pytest.approx(0.5)


def test_summary_without_multi_turn_keeps_two_groups():
    recs = [
        {"category": "simple_python", "correct": True},
        {"category": "live_simple", "correct": False},
        {"category": "multi_turn_base", "correct": True},
    ]
    metrics, counts = bfcl_summary(recs)
    assert metrics["overall"] == pytest.approx((1 + 0 + 1) / 3)
    metrics, _ = bfcl_summary(recs[:2])
    assert "multi_turn" not in metrics and metrics["overall"] == pytest.approx(0.5)


def test_parse_call_reads_literals_only(no_eval):
    assert mt.parse_call("sort('a.pdf')") == ("sort", ["a.pdf"], {})
    assert mt.parse_call("mv(source='x', n=-2, l=[1, {'k': 2}])") == (
        "mv",
        [],
        {"source": "x", "n": -2, "l": [1, {"k": 2}]},
    )
    for hostile in (
        "__import__('os').system('touch pwned')",
        "os.system('ls')",
        "f(*x)",
        "[f(a=1)]",
        "f(a=" + "[" * 100 + "]" * 100 + ")",
        "f(a=9**9**9)",
    ):
        with pytest.raises(DecodeError):
            mt.parse_call(hostile)


def test_execution_strings_are_bfcl_call_text():
    decoded = [{"cd": {"folder": "a b"}}, {"f": {"d": {"k": [1, 2]}, "n": 1.5}}]
    assert mt.execution_strings(decoded) == ["cd(folder='a b')", "f(d={'k': [1, 2]}, n=1.5)"]
    assert [mt.parse_call(s)[2] for s in mt.execution_strings(decoded)] == [
        {"folder": "a b"},
        {"d": {"k": [1, 2]}, "n": 1.5},
    ]


def test_call_method_dispatches_by_name_and_refuses_the_rest(no_eval):
    calls = []

    def ls(a=False):
        calls.append(a)
        return {"current_directory_content": ["x"]}

    methods = {"ls": ls, "run": ls}
    assert mt.call_method(methods, "ls(a=True)") == '{"current_directory_content": ["x"]}'
    assert calls == [True]
    assert mt.call_method(methods, "rm(file_name='x')").startswith("Error during execution")
    assert "not allowed" in mt.call_method(methods, "run(a=1)")
    assert "refused" in mt.call_method(methods, f"ls(a={10**7})")
    assert mt.call_method(methods, "ls(b=1)").startswith("Error during execution")
    assert calls == [True]


def test_a_slow_call_is_stopped(monkeypatch):
    import time

    monkeypatch.setattr(mt, "CALL_SECONDS", 0.2)

    def spin(n=1):
        while True:
            n += 1

    start = time.monotonic()
    result = mt.call_method({"spin": spin}, "spin()")
    assert result.startswith("Error during execution: call over") and time.monotonic() - start < 5


needs_wheel = pytest.mark.skipif(
    not WHEEL.is_file(),
    reason="bfcl-eval wheel not in resources/cache (tests never download): "
    "`scripts/setup-test-extras.sh --no-model` (or `pip download bfcl-eval==2026.3.23 --no-deps "
    "-d resources/cache/wheels`)",
)


def _scripted(answers):
    """A fake model: the next fixed answer at each call, and the conversations it saw."""
    seen = []
    it = iter(answers)

    def respond(messages):
        seen.append([dict(m) for m in messages])
        return next(it)

    return respond, seen


def _item(item_id="multi_turn_base_1"):
    (item,) = mt.load_multi_turn(WHEEL, ["multi_turn_base"], ids=[item_id])
    return item


@needs_wheel
def test_scripted_conversation_passes_bfcl_checker(no_eval):
    """multi_turn_base_1's ground truth: ls; cd+mv; cd+grep; tail (one turn each)."""
    item = _item()
    checker, _ = mt.bfcl_modules(WHEEL)
    script = [
        "[ls(a=True)]", "Done.",
        "[cd(folder='workspace'), mv(source='log.txt', destination='archive')]", "Done.",
        "[cd(folder='archive')]", "[grep(file_name='log.txt', pattern='Error')]", "Done.",
        "```[tail(file_name='log.txt', lines=20)]```", "Done.",
    ]  # fmt: skip
    respond, seen = _scripted(script)
    turns = mt.run_conversation(item, respond)
    assert not turns.force_quit and [len(t) for t in turns.answers] == [2, 2, 3, 2]
    # the executed results were fed back as tool messages (the simulated file system's)
    tool = [m for m in seen[1] if m["role"] == "tool"]
    assert tool and tool[0]["name"] == "ls(a=True)" and "workspace" in tool[0]["content"]
    assert seen[0][0]["role"] == "system" and '"name": "ls"' in seen[0][0]["content"]
    assert mt.check_conversation(checker, item, turns.answers) == {"valid": True}


@needs_wheel
def test_scripted_conversation_fails_bfcl_checker(no_eval, tmp_path):
    item = _item()
    checker, _ = mt.bfcl_modules(WHEEL)
    hostile = "[__import__('os').system('touch " + str(tmp_path / "pwned") + "')]"
    script = [
        "[ls(a=True)]", "Done.",
        "[cd(folder='workspace'), mv(source='log.txt', destination='tmp')]", "Done.",  # wrong
        hostile, "Done.",
        "[tail(file_name='log.txt', lines=20)]", "Done.",
    ]  # fmt: skip
    respond, seen = _scripted(script)
    turns = mt.run_conversation(item, respond)
    verdict = mt.check_conversation(checker, item, turns.answers)
    assert verdict["valid"] is False
    assert verdict["error_type"] == "multi_turn:instance_state_mismatch"
    assert not (tmp_path / "pwned").exists()
    fed = [m["content"] for m in seen[5] if m["role"] == "tool"][-1]
    assert fed.startswith("Error during execution")  # "system" is no method of the APIs


@needs_wheel
def test_step_limit_force_terminates(no_eval):
    item = _item()
    checker, _ = mt.bfcl_modules(WHEEL)
    respond, _ = _scripted(["[pwd()]"] * 10)
    turns = mt.run_conversation(item, respond, max_steps=3)
    assert turns.force_quit and [len(t) for t in turns.answers] == [4]
    verdict = mt.check_conversation(checker, item, turns.answers)
    assert verdict == {"valid": False, "error_type": "multi_turn:force_terminated"}


@needs_wheel
def test_ground_truth_replays_right_on_every_item(no_eval):
    """The dispatcher reproduces bfcl-eval's eval-based execution: each item's ground truth,
    run through the checker against itself, is judged right (800 items)."""
    checker, _ = mt.bfcl_modules(WHEEL)
    items = mt.load_multi_turn(WHEEL, mt.MULTI_TURN, max_per_category=50)
    for item in items:
        answers = [[gt] if gt else [] for gt in item["ground_truth"]]
        mt.reset_instances()
        entry = {k: item[k] for k in ("id", "initial_config", "involved_classes")}
        verdict = checker.multi_turn_checker(answers, item["ground_truth"], entry, "", "loki")
        assert verdict["valid"], (item["id"], verdict.get("error_type"))


@needs_wheel
def test_miss_func_turn_gets_held_out_docs(no_eval):
    (item,) = mt.load_multi_turn(WHEEL, ["multi_turn_miss_func"], max_per_category=1)
    (turn, held) = next(iter(item["missed_function"].items()))
    assert held and all(f["name"] not in {g["name"] for g in item["function"]} for f in held)
    respond, seen = _scripted(["Done."] * 10)
    mt.run_conversation(item, respond)
    user = [m["content"] for m in seen[-1] if m["role"] == "user"]
    assert held[0]["name"] in user[int(turn)] and "more functions" in user[int(turn)]


@needs_wheel
def test_evaluate_counts_a_conversation_over_the_context_wrong():
    """The task driver on single- and multi-turn items: a conversation whose prompt outgrows the
    model's window (512 positions) fails without generating; records keep their order."""
    from conftest import build_tiny_model, build_tiny_tokenizer

    from loki_pipeline.evaluate import toolace
    from loki_pipeline.evaluate.bfcl_multi_turn import load_bfcl

    items = load_bfcl(
        WHEEL, ["multi_turn_base", "simple_python"], max_per_category=1,
        multi_turn_ids=["multi_turn_base_1"],
    )  # fmt: skip
    assert [it["id"] for it in items] == ["multi_turn_base_1", "simple_python_0"]
    out = toolace.evaluate(
        build_tiny_model("llama"), build_tiny_tokenizer(), items, toolace.BfclSettings()
    )
    mt_rec, st_rec = out["items"]
    assert mt_rec["id"] == "multi_turn_base_1" and mt_rec["correct"] is False
    assert mt_rec["error_type"] == "multi_turn:context_overflow" and mt_rec["output"] == []
    assert st_rec["category"] == "simple_python"
    assert out["metrics"]["multi_turn"] == 0.0 and out["counts"]["multi_turn_base"] == 1
