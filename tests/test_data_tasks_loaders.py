"""Task data loaders: the shipped default files, their generator, other sources, bad input."""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from loki_pipeline.data.chat import IGNORE_INDEX, tokenize_conversation
from loki_pipeline.data.reranker import RERANKER_SYSTEM_PROMPT, load_reranker
from loki_pipeline.data.toolace import load_toolace, toolace_row_to_messages
from loki_pipeline.errors import LokiInputError
from loki_pipeline.tasks.registry import load_task

ROOT = Path(__file__).resolve().parents[1]
TOOLACE = ROOT / "data" / "toolace" / "train.json"
RERANKER = ROOT / "data" / "reranker" / "train.jsonl"


def _parse_calls(text: str) -> list[tuple[str, dict]] | None:
    """Bracket-call syntax -> [(name, kwargs)], or None when the text is not a call list."""
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError:
        return None
    if not isinstance(tree, ast.List) or not all(isinstance(c, ast.Call) for c in tree.elts):
        return None
    return [
        (ast.unparse(c.func), {kw.arg: ast.literal_eval(kw.value) for kw in c.keywords})
        for c in tree.elts
    ]


# -- the shipped default data ---------------------------------------------------------------


def test_shipped_toolace_is_valid_function_calling_data():
    convs = load_toolace(TOOLACE)
    assert 250 <= len(convs) <= 400
    assert TOOLACE.stat().st_size < 1_000_000
    kinds = Counter()
    for conv in convs:
        system = conv[0]
        assert system["role"] == "system"
        tools = json.loads(system["content"][system["content"].index("\n[{") + 1 :].strip())
        specs = {t["name"]: t["parameters"] for t in tools}
        assistant = [m["content"] for m in conv if m["role"] == "assistant"]
        calls = _parse_calls(assistant[0])
        if calls is None:
            kinds["no_call"] += 1
            continue
        # every call names a listed tool, passes only declared arguments and all required ones
        for name, kwargs in calls:
            assert name in specs, (name, list(specs))
            assert set(kwargs) <= set(specs[name]["properties"])
            assert set(specs[name]["required"]) <= set(kwargs)
        kinds["parallel" if len(calls) > 1 else "single"] += 1
        if any(m["role"] == "tool" for m in conv):
            kinds["multi_turn"] += 1
            # after the tool result comes a natural-language answer, not another call
            assert conv[-2]["role"] == "tool" and _parse_calls(conv[-1]["content"]) is None
    assert min(kinds.values()) >= 20, kinds
    assert len({json.dumps(c) for c in convs}) == len(convs)  # no duplicate dialogues


def test_shipped_reranker_is_the_papers_chat_with_scores_spread_over_1_to_7():
    convs = load_reranker(RERANKER)
    assert 250 <= len(convs) <= 400
    assert RERANKER.stat().st_size < 1_000_000
    for system, user, assistant in convs:
        assert system == {"role": "system", "content": RERANKER_SYSTEM_PROMPT}
        assert user["role"] == "user" and user["content"].startswith("<<<Query>>>\n")
        assert "\n\n<<<Context>>>\n" in user["content"]
        assert assistant["role"] == "assistant"
    scores = Counter(int(c[2]["content"]) for c in convs)
    assert set(scores) == set(range(1, 8))
    rows = [json.loads(line) for line in RERANKER.read_text().splitlines()]
    assert {"question", "context", "mean_exp_val_max7_round"} <= set(rows[0])


def test_generator_reproduces_the_shipped_files(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "make_task_data", ROOT / "data" / "make_task_data.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_task_data"] = module
    try:
        spec.loader.exec_module(module)
        assert module.make_toolace() == json.loads(TOOLACE.read_text())
        assert module.make_reranker() == [json.loads(x) for x in RERANKER.read_text().splitlines()]
    finally:
        del sys.modules["make_task_data"]


def test_shipped_toolace_trains_only_the_assistant_turns(tiny_tokenizer):
    conv = next(c for c in load_toolace(TOOLACE) if any(m["role"] == "tool" for m in c))
    ex = tokenize_conversation(tiny_tokenizer, conv, cutoff_len=8192)
    trained = tiny_tokenizer.decode([t for t in ex["labels"] if t != IGNORE_INDEX])
    assert trained == "".join(m["content"] + "<|im_end|>" for m in conv if m["role"] == "assistant")


def test_reranker_trains_only_the_score_digit(tiny_tokenizer):
    conv = load_reranker(RERANKER, max_samples=1)[0]
    ex = tokenize_conversation(tiny_tokenizer, conv, cutoff_len=8192)
    trained = tiny_tokenizer.decode([t for t in ex["labels"] if t != IGNORE_INDEX])
    assert trained == conv[2]["content"] + "<|im_end|>" and conv[2]["content"] in "1234567"


# -- sources and options ---------------------------------------------------------------------


def test_max_samples_takes_the_first_rows():
    assert load_toolace(TOOLACE, max_samples=5) == load_toolace(TOOLACE)[:5]
    assert load_reranker(RERANKER, max_samples=7) == load_reranker(RERANKER)[:7]


def test_toolace_jsonl_and_json_give_the_same_conversations(tmp_path):
    rows = json.loads(TOOLACE.read_text())[:10]
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load_toolace(jsonl) == load_toolace(TOOLACE, max_samples=10)


def test_toolace_maps_speakers_to_roles_and_can_fold_tool_into_user():
    row = {
        "system": "S",
        "conversations": [
            {"from": "user", "value": "u"},
            {"from": "assistant", "value": "[f()]"},
            {"from": "tool", "value": "r"},
            {"from": "assistant", "value": "a"},
        ],
    }
    assert [m["role"] for m in toolace_row_to_messages(row)] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    folded = toolace_row_to_messages(row, tool_role="user")
    assert folded[3] == {"role": "user", "content": "r"}


def test_reranker_parquet_with_custom_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "r.parquet"
    pq.write_table(pa.table({"q": ["what is x"], "doc": ["x is y"], "rel": [5]}), path)
    convs = load_reranker(path, columns={"query": "q", "text": "doc", "score": "rel"})
    assert convs[0][1]["content"] == "<<<Query>>>\nwhat is x\n\n<<<Context>>>\nx is y"
    assert convs[0][2]["content"] == "5"


def test_hub_source_streams_only_the_requested_rows(monkeypatch):
    calls = {}

    def fake_load_dataset(repo, *, split, revision, streaming):
        calls.update(repo=repo, split=split, revision=revision, streaming=streaming)
        return (
            {"question": f"q{i}", "context": "c", "mean_exp_val_max7_round": 1 + i % 7}
            for i in range(10**6)
        )

    import datasets

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    convs = load_reranker("hf:lightblue/reranker_continuous_filt_max7_train@abc", max_samples=3)
    assert len(convs) == 3
    assert calls == {
        "repo": "lightblue/reranker_continuous_filt_max7_train",
        "split": "train",
        "revision": "abc",
        "streaming": True,
    }


def test_load_task_uses_the_shipped_default(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert load_task("toolace", max_samples=2) == load_toolace(TOOLACE, max_samples=2)
    with pytest.raises(LokiInputError, match="task 'summarise' has no shipped data"):
        load_task("summarise")  # any other name is a task of your own: its data is named


# -- bad input: a clear error naming file and row ------------------------------------------

GOOD_TURNS = [{"from": "user", "value": "hi"}, {"from": "assistant", "value": "[f()]"}]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"system": "s"}], "row 0: missing or empty 'conversations'"),
        (
            [
                {"system": "s", "conversations": GOOD_TURNS},
                {"system": "s", "conversations": [{"from": "user"}]},
            ],
            "row 1, turn 0: expected an object",
        ),
        (
            [{"system": "s", "conversations": [{"from": "user", "value": "hi"}]}],
            "row 0: the conversation has no assistant turn",
        ),
        (
            [{"system": "s", "conversations": [{"from": "narrator", "value": "x"}]}],
            "unknown speaker 'narrator'",
        ),
        ([], "is empty"),
        ([{"system": 3, "conversations": GOOD_TURNS}], "'system' must be a string"),
    ],
    ids=[
        "no_conversations",
        "turn_missing_value",
        "no_assistant",
        "unknown_speaker",
        "empty",
        "bad_system",
    ],
)
def test_bad_toolace_rows_are_rejected_naming_file_and_row(tmp_path, rows, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(LokiInputError, match="bad.json") as err:
        load_toolace(path)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"question": "q", "context": "c"}, "missing column(s) ['mean_exp_val_max7_round']"),
        ({"question": "q", "context": "c", "mean_exp_val_max7_round": 0}, "score 0 is not"),
        ({"question": "q", "context": "c", "mean_exp_val_max7_round": 8}, "score 8 is not"),
        ({"question": "q", "context": "c", "mean_exp_val_max7_round": 3.5}, "score 3.5 is not"),
        ({"question": "q", "context": "c", "mean_exp_val_max7_round": "5"}, "score '5' is not"),
        ({"question": "", "context": "c", "mean_exp_val_max7_round": 5}, "non-empty string"),
    ],
    ids=["missing_score", "score_0", "score_8", "score_fraction", "score_string", "empty_query"],
)
def test_bad_reranker_rows_are_rejected_naming_file_and_line(tmp_path, row, message):
    path = tmp_path / "bad.jsonl"
    good = {"question": "q", "context": "c", "mean_exp_val_max7_round": 7}
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(row) + "\n")
    with pytest.raises(LokiInputError) as err:
        load_reranker(path)
    assert f"{path} line 3" in str(err.value) and message in str(err.value)


def test_integral_float_scores_are_accepted(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"question": "q", "context": "c", "mean_exp_val_max7_round": 4.0}))
    assert load_reranker(path)[0][2]["content"] == "4"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.jsonl", "\n", "is empty"),
        ("broken.jsonl", '{"question": \n', "line 1: invalid JSON"),
        ("data.csv", "a,b\n", "unsupported suffix"),
        ("object.json", '{"rows": []}', "expected a JSON list"),
    ],
)
def test_bad_files_are_rejected(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(LokiInputError, match=message):
        load_reranker(path)


def test_missing_file_and_bad_max_samples_are_rejected(tmp_path):
    with pytest.raises(LokiInputError, match="does not exist"):
        load_toolace(tmp_path / "nope.json")
    with pytest.raises(LokiInputError, match="max_samples"):
        load_toolace(TOOLACE, max_samples=0)
    with pytest.raises(LokiInputError, match="expected 'hf:<owner>/<name>"):
        load_toolace("hf:ToolACE")


SMOLLM2_DIR = ROOT / "resources" / "models" / "smollm2-135m"


@pytest.mark.slow
@pytest.mark.skipif(
    not (SMOLLM2_DIR / "tokenizer.json").exists(),
    reason="default model not prepared: run `snakemake --cores 1 resources/models/smollm2-135m`",
)
def test_real_smollm2_tokenizer_trains_only_assistant_turns_of_the_shipped_data():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(SMOLLM2_DIR)
    convs = load_toolace(TOOLACE, max_samples=20) + load_reranker(RERANKER, max_samples=5)
    for conv in convs:
        ex = tokenize_conversation(tok, conv, cutoff_len=4096)
        trained = tok.decode([t for t in ex["labels"] if t != IGNORE_INDEX])
        assert trained == "".join(
            m["content"] + "<|im_end|>" for m in conv if m["role"] == "assistant"
        )


@pytest.mark.parametrize("task", ["toolace", "reranker"])
def test_loader_options_of_a_schema_filled_block_load_the_shipped_data(task):
    from loki_pipeline.tasks.registry import load_task, loader_options

    block = {
        "source": None,
        "split": "train",
        "max_samples": 3,
        "tool_role": "tool",
        "columns": None,
    }
    options = loader_options(task, block)
    assert "source" not in options and "max_samples" not in options
    assert len(load_task(task, None, max_samples=3, **options)) == 3
