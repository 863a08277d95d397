"""MMLU loader, the shipped mini set, and the LoKI paper's prompt through a chat template."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_tokenizer

from loki_pipeline.data import MMLU_SUBJECTS, MMLUItem, encode_prompt, format_prompt, load_mmlu
from loki_pipeline.data.mmlu import encode_prompts
from loki_pipeline.data.records import read_records
from loki_pipeline.errors import LokiInputError

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "data" / "mmlu" / "mmlu_mini.jsonl"

ROW = {
    "question": "Which planet is largest?",
    "subject": "astronomy",
    "choices": ["Mars", "Jupiter", "Venus", "Mercury"],
    "answer": 1,
}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_subject_list_is_the_57_official_names():
    assert len(MMLU_SUBJECTS) == len(set(MMLU_SUBJECTS)) == 57
    for name in ("abstract_algebra", "high_school_government_and_politics", "world_religions"):
        assert name in MMLU_SUBJECTS


def test_shipped_mini_set_covers_every_subject_in_the_cais_schema():
    rows = [json.loads(line) for line in MINI.read_text().splitlines()]
    assert len(rows) == 171
    assert Counter(r["subject"] for r in rows) == dict.fromkeys(MMLU_SUBJECTS, 3)
    for r in rows:
        assert set(r) == {"question_id", "subject", "question", "choices", "answer"}
        assert isinstance(r["question"], str) and r["question"].strip()
        assert len(r["choices"]) == 4 and len(set(r["choices"])) == 4
        assert all(isinstance(c, str) and c.strip() for c in r["choices"])
        assert type(r["answer"]) is int and 0 <= r["answer"] <= 3
    assert len({r["question_id"] for r in rows}) == len(rows)
    # No letter is a free win: each is the answer to roughly a quarter of the questions.
    assert min(Counter(r["answer"] for r in rows).values()) >= 171 // 4 - 5


def test_load_mmlu_reads_the_mini_set():
    items = load_mmlu(MINI)
    assert len(items) == 171
    first = json.loads(MINI.read_text().splitlines()[0])
    assert items[0] == MMLUItem(
        first["question_id"],
        first["subject"],
        first["question"],
        tuple(first["choices"]),
        first["answer"],
    )


def test_max_per_subject_keeps_the_first_in_file_order(tmp_path):
    rows = [dict(ROW, question=f"astro {i}?") for i in range(4)]
    rows.insert(2, dict(ROW, subject="virology", question="virus?"))
    items = load_mmlu(write_jsonl(tmp_path / "d.jsonl", rows), max_per_subject=2)
    assert [i.question for i in items] == ["astro 0?", "astro 1?", "virus?"]
    # Without a question_id column the ids count each subject's rows from 0.
    assert [i.question_id for i in items] == ["astronomy/0", "astronomy/1", "virology/0"]
    assert len(load_mmlu(MINI, max_per_subject=1)) == 57


def test_json_and_parquet_load_the_same_items(tmp_path):
    import pandas as pd

    rows = [json.loads(line) for line in MINI.read_text().splitlines()][:20]
    expected = load_mmlu(write_jsonl(tmp_path / "d.jsonl", rows))
    (tmp_path / "d.json").write_text(json.dumps(rows))
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    assert load_mmlu(tmp_path / "d.json") == expected
    assert load_mmlu(tmp_path / "d.parquet") == expected


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("broken.jsonl", '{"question": \n'),
        ("object.json", '{"rows": []}'),
        ("list_row.jsonl", "[1, 2]\n"),
        ("d.csv", "question,subject\n"),
        ("missing.jsonl", None),
    ],
)
def test_files_are_read_and_refused_as_every_data_file_is(tmp_path, name, content):
    """MMLU files go through the task data's reader: the same file, the same error."""
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(LokiInputError) as expected:
        list(read_records(path))
    with pytest.raises(LokiInputError) as got:
        load_mmlu(path)
    assert str(got.value) == str(expected.value) and str(path) in str(got.value)


def test_parquet_integer_ids_and_a_missing_field_are_named_by_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [ROW | {"question_id": 7}, ROW | {"question_id": 8, "question": "again?"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    assert [i.question_id for i in load_mmlu(tmp_path / "d.parquet")] == ["7", "8"]
    pq.write_table(pa.Table.from_pylist([{k: v for k, v in ROW.items() if k != "answer"}]),
                   tmp_path / "bad.parquet")  # fmt: skip
    with pytest.raises(LokiInputError, match=r"bad.parquet row 0: missing field\(s\) answer"):
        load_mmlu(tmp_path / "bad.parquet")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"question": None}, "missing field\\(s\\) question"),
        ({"choices": ["a", "b", "c"]}, "'choices' must be 4 strings, got 3"),
        ({"choices": "abcd"}, "'choices' must be a list"),
        ({"answer": 4}, "'answer' 4 out of range 0-3"),
        ({"answer": "B"}, "'answer' must be an integer"),
        ({"answer": True}, "'answer' must be an integer"),
        ({"subject": "astrology"}, "unknown subject 'astrology'"),
        ({"question": "  "}, "'question' must be a non-empty string"),
    ],
)
def test_bad_row_is_named_by_file_and_line(tmp_path, change, message):
    bad = {k: v for k, v in {**ROW, **change}.items() if v is not None}
    path = write_jsonl(tmp_path / "bad.jsonl", [ROW, ROW | {"question": "ok?"}, bad])
    with pytest.raises(LokiInputError, match=f"bad.jsonl line 3: {message}"):
        load_mmlu(path)


def test_empty_or_missing_data_is_refused(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(LokiInputError, match="empty.jsonl: empty data set"):
        load_mmlu(tmp_path / "empty.jsonl")
    with pytest.raises(LokiInputError, match="missing.jsonl does not exist"):
        load_mmlu(tmp_path / "missing.jsonl")
    (tmp_path / "d.csv").write_text("question,subject\n")
    with pytest.raises(LokiInputError, match="unsupported suffix '.csv'"):
        load_mmlu(tmp_path / "d.csv")
    with pytest.raises(LokiInputError, match="max_per_subject 0"):
        load_mmlu(MINI, max_per_subject=0)


def test_duplicate_question_ids_are_refused(tmp_path):
    rows = [ROW | {"question_id": "q1"}, ROW | {"question_id": "q1", "question": "again?"}]
    with pytest.raises(LokiInputError, match="line 2: duplicate question_id 'q1'"):
        load_mmlu(write_jsonl(tmp_path / "d.jsonl", rows))


def test_format_prompt_is_papers_text():
    item = MMLUItem("q", "high_school_us_history", "Who?", ("W", "X", "Y", "Z"), 0)
    assert format_prompt(item) == (
        "There is a single choice question about High School Us History. Answer the question "
        "by replying A, B, C or D.\nQuestion: Who?\nChoices:\nA. W\nB. X\nC. Y\nD. Z\nAnswer: \n"
    )


def test_encode_prompt_is_one_chatml_user_turn_with_generation_prompt():
    tok = build_tiny_tokenizer()
    item = load_mmlu(MINI)[5]
    ids = encode_prompt(tok, item)
    assert ids.dtype == torch.long and ids.dim() == 1
    # Oracle: the ChatML text written out by hand, tokenized without extra special tokens.
    text = f"<|im_start|>user\n{format_prompt(item)}<|im_end|>\n<|im_start|>assistant\n"
    assert ids.tolist() == tok(text, add_special_tokens=False).input_ids


@pytest.mark.parametrize("returns", ["batch_encoding", "list", "nested_list", "tensor"])
def test_encode_prompt_accepts_every_apply_chat_template_return(returns):
    from transformers import BatchEncoding

    ids = [7, 8, 9]

    class Tok:
        chat_template = "x"

        def apply_chat_template(self, messages, **kwargs):
            assert messages == [{"role": "user", "content": format_prompt(item)}]
            assert kwargs["add_generation_prompt"] is True
            return {
                "batch_encoding": BatchEncoding({"input_ids": ids, "attention_mask": [1, 1, 1]}),
                "list": ids,
                "nested_list": [ids],
                "tensor": torch.tensor([ids]),
            }[returns]

    item = MMLUItem("q", "astronomy", "Q?", ("a", "b", "c", "d"), 0)
    assert encode_prompt(Tok(), item).tolist() == ids


def test_encode_prompt_needs_a_chat_template():
    tok = build_tiny_tokenizer()
    tok.chat_template = None
    with pytest.raises(LokiInputError, match="no chat template"):
        encode_prompt(tok, load_mmlu(MINI)[0])


def test_hub_source_loads_config_all_and_caps_each_subject(monkeypatch):
    import datasets

    calls = []
    rows = [dict(ROW, question=f"q{i}?") for i in range(5)] + [dict(ROW, subject="virology")]

    def fake_load_dataset(repo, name, *, split):
        calls.append((repo, name, split))
        return rows

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    items = load_mmlu("hf:cais/mmlu", split="validation", max_per_subject=2)
    assert calls == [("cais/mmlu", "all", "validation")]
    assert [(i.subject, i.question) for i in items] == [
        ("astronomy", "q0?"),
        ("astronomy", "q1?"),
        ("virology", ROW["question"]),
    ]
    with pytest.raises(LokiInputError, match="split 'train'"):
        load_mmlu("hf:cais/mmlu", split="train")


def test_encode_prompts_refuses_prompts_past_the_context_counting_them(tmp_path, tiny_tokenizer):
    questions = ["Short?", "Long " * 300 + "?", "Also short?", "Longer " * 400 + "?"]
    path = write_jsonl(tmp_path / "d.jsonl", [dict(ROW, question=q) for q in questions])
    items = load_mmlu(path)
    lengths = [len(ids) for ids in encode_prompts(tiny_tokenizer, items)]
    limit = max(lengths[0], lengths[2])  # the two short prompts fit exactly
    with pytest.raises(
        LokiInputError,
        match=rf"d.jsonl: 2 of 4 prompts are longer than the model's context of {limit} tokens "
        rf"\(the first: question_id 'astronomy/1', {lengths[1]} tokens\)",
    ):
        encode_prompts(tiny_tokenizer, items, max_length=limit, source=str(path))
    kept = encode_prompts(tiny_tokenizer, items[::2], max_length=limit)
    assert [len(ids) for ids in kept] == lengths[::2]
