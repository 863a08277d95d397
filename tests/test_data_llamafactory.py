"""A task of the user's: LLaMA-Factory's alpaca and sharegpt formats, their column mappings, bad
rows named by file, row and column, and the held-out split that training leaves out.

The expected conversations are written out by hand from LLaMA-Factory's data/README.md
(``instruction\\ninput`` as the user turn, history pairs first, odd/even roles of sharegpt).
"""

from __future__ import annotations

import json
import math

import pytest

from loki_pipeline.data.llamafactory import (
    heldout_split,
    load_llamafactory,
    read_llamafactory,
    sharegpt_row_to_messages,
    split_part,
)
from loki_pipeline.errors import LokiInputError
from loki_pipeline.tasks.registry import load_task, task_examples


def write(tmp_path, rows, name="data.json"):
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows))
    return path


ALPACA = [
    {
        "instruction": "Translate to French.",
        "input": "cat",
        "output": "chat",
        "system": "Be brief.",
        "history": [["Hello", "Bonjour"]],
    },
    {"instruction": "What is 2 + 2?", "input": "", "output": "4"},
]


def test_alpaca_default_columns_become_system_history_prompt_and_response(tmp_path):
    got = load_llamafactory(write(tmp_path, ALPACA), format="alpaca")
    assert got == [
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Bonjour"},
            {"role": "user", "content": "Translate to French.\ncat"},
            {"role": "assistant", "content": "chat"},
        ],
        [
            {"role": "user", "content": "What is 2 + 2?"},
            {"role": "assistant", "content": "4"},
        ],
    ]


def test_alpaca_column_mapping_reads_other_names(tmp_path):
    rows = [{"q": "Capital of Peru?", "ctx": None, "a": "Lima", "sys": "Terse."}]
    columns = {"prompt": "q", "query": "ctx", "response": "a", "system": "sys"}
    got = load_llamafactory(write(tmp_path, rows, "d.jsonl"), format="alpaca", columns=columns)
    assert got == [
        [
            {"role": "system", "content": "Terse."},
            {"role": "user", "content": "Capital of Peru?"},
            {"role": "assistant", "content": "Lima"},
        ]
    ]


SHAREGPT = [
    {
        "conversations": [
            {"from": "human", "value": "Weather in Oslo?"},
            {
                "from": "function_call",
                "value": '{"name": "weather", "arguments": {"city": "Oslo"}}',
            },
            {"from": "observation", "value": '{"temp": 3}'},
            {"from": "gpt", "value": "It is 3 degrees."},
        ],
        "system": "You are helpful.",
        "tools": [{"name": "weather"}],
    },
    {
        "conversations": [
            {"from": "system", "value": "Answer in one word."},
            {"from": "human", "value": "Sky colour?"},
            {"from": "gpt", "value": "Blue"},
        ],
        "system": "overridden by the system turn",
    },
]


def test_sharegpt_default_tags_map_roles_and_append_tools_to_the_system_prompt(tmp_path):
    got = load_llamafactory(write(tmp_path, SHAREGPT), format="sharegpt")
    assert got == [
        [
            {"role": "system", "content": 'You are helpful.\n\n[{"name": "weather"}]'},
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant",
             "content": '{"name": "weather", "arguments": {"city": "Oslo"}}'},
            {"role": "tool", "content": '{"temp": 3}'},
            {"role": "assistant", "content": "It is 3 degrees."},
        ],
        [
            {"role": "system", "content": "Answer in one word."},
            {"role": "user", "content": "Sky colour?"},
            {"role": "assistant", "content": "Blue"},
        ],
    ]  # fmt: skip


def test_sharegpt_openai_style_through_columns_and_tags():
    row = {
        "messages": [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "U"},
            {"role": "assistant", "content": "A"},
        ]
    }
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user",
            "assistant_tag": "assistant", "system_tag": "system"}  # fmt: skip
    got = sharegpt_row_to_messages(row, columns={"messages": "messages"}, tags=tags)
    assert got == row["messages"]


@pytest.mark.parametrize(
    ("fmt", "row", "options", "message"),
    [
        ("alpaca", {"instruction": "x"}, {}, "row 0: missing column 'output' (the response"),
        ("alpaca", {"q": "x", "output": "y"}, {"columns": {"prompt": "question"}},
         "row 0: missing column 'question' (the prompt"),
        ("alpaca", {"instruction": "x", "output": 3}, {}, "column 'output' must be a string"),
        ("alpaca", {"instruction": "", "input": "", "output": "y"}, {}, "both empty"),
        ("alpaca", {"instruction": "x", "output": "y", "history": [["a"]]}, {},
         "history[0] must be a [prompt, response] pair"),
        ("sharegpt", {"messages": []}, {}, "row 0: missing column 'conversations'"),
        ("sharegpt", {"conversations": [{"from": "human"}]}, {},
         "conversations[0]: expected an object with 'from' and 'value'"),
        ("sharegpt", {"conversations": [{"from": "gpt", "value": "a"}]}, {},
         "conversations[0]: from 'gpt' where 'human' or 'observation' is expected"),
        ("sharegpt", {"conversations": [{"from": "human", "value": "a"}]}, {},
         "ends with a 'human' turn"),
        ("alpaca", {"instruction": "x", "output": "y"}, {"columns": {"messages": "m"}},
         "alpaca columns: unknown keys ['messages']"),
        ("alpaca", {"instruction": "x", "output": "y"}, {"tags": {"role_tag": "r"}},
         "tags apply to format sharegpt only"),
    ],
    ids=["no_output", "mapped_prompt", "not_str", "no_prompt", "history", "no_messages",
         "no_value", "order", "odd_count", "columns", "tags"],
)  # fmt: skip
def test_bad_rows_are_refused_naming_file_row_and_column(tmp_path, fmt, row, options, message):
    path = write(tmp_path, [row])
    with pytest.raises(LokiInputError) as info:
        load_llamafactory(path, format=fmt, **options)
    assert message in str(info.value)
    if "unknown keys" not in message and "tags apply" not in message:
        assert str(path) in str(info.value)


def test_a_row_of_the_jsonl_file_is_named_by_its_line(tmp_path):
    path = write(tmp_path, [ALPACA[1], {"instruction": "x"}], "d.jsonl")
    with pytest.raises(LokiInputError, match=rf"{path} line 2: missing column 'output'"):
        load_llamafactory(path, format="alpaca")


def test_an_unknown_format_and_a_missing_format_are_refused(tmp_path):
    path = write(tmp_path, ALPACA)
    with pytest.raises(LokiInputError, match="train.format must be one of alpaca, sharegpt"):
        load_llamafactory(path, format="openai")
    with pytest.raises(LokiInputError, match="got None"):
        load_llamafactory(path)


def _rows(n):
    return [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(n)]


@pytest.mark.parametrize(("n", "fraction"), [(100, 0.05), (146, 0.2), (7, 0.5), (3, 0.9)])
def test_heldout_split_is_disjoint_complete_seeded_and_of_the_stated_size(n, fraction):
    conversations = [[{"role": "user", "content": str(i)}] for i in range(n)]
    train, held = heldout_split(conversations, fraction, seed=0)
    assert not set(train) & set(held)
    assert sorted(train + held) == list(range(n))
    assert len(held) == min(max(1, math.ceil(fraction * n)), n - 1)
    assert heldout_split(conversations, fraction, seed=0) == (train, held)
    assert heldout_split(conversations, fraction, seed=1)[1] != held or n < 4


def test_copies_of_a_row_fall_on_one_side_so_no_heldout_answer_is_trained_on():
    conversations = [[{"role": "user", "content": str(i % 10)}] for i in range(40)]  # 4 copies each
    for seed in range(5):
        train, held = heldout_split(conversations, 0.3, seed)
        trained = {json.dumps(conversations[i]) for i in train}
        assert held and not any(json.dumps(conversations[i]) in trained for i in held)


def test_fraction_zero_holds_nothing_out_and_a_bad_fraction_is_refused():
    conversations = [[{"role": "user", "content": str(i)}] for i in range(5)]
    assert heldout_split(conversations, 0, 0) == ([0, 1, 2, 3, 4], [])
    with pytest.raises(LokiInputError, match=r"fraction must be in \[0, 1\)"):
        heldout_split(conversations, 1.0, 0)


def test_training_and_heldout_parts_of_a_file_share_no_row(tmp_path):
    path = write(tmp_path, _rows(60))
    heldout = {"fraction": 0.2, "seed": 3}
    train = load_llamafactory(path, format="alpaca", heldout=heldout)
    held = load_llamafactory(path, format="alpaca", heldout=heldout, part="heldout")
    everything = load_llamafactory(path, format="alpaca", part="all")
    assert len(held) == 12 and len(train) == 48
    assert not {json.dumps(c) for c in train} & {json.dumps(c) for c in held}
    assert sorted(map(json.dumps, train + held)) == sorted(map(json.dumps, everything))
    # max_samples takes the first rows of the training part; the split does not move
    assert load_llamafactory(path, format="alpaca", heldout=heldout, max_samples=5) == train[:5]
    rows = read_llamafactory(path, format="alpaca")
    indices = [i for i, _, _ in split_part(rows, heldout, "heldout")]
    assert [c for _, _, c in split_part(rows, heldout, "heldout")] == held
    assert all(rows[i][1] == c for i, c in zip(indices, held, strict=True))


def test_the_generic_task_trains_through_the_registry_without_its_heldout_rows(
    tmp_path, tiny_tokenizer
):
    path = write(tmp_path, _rows(20))
    options = {"format": "alpaca", "heldout": {"fraction": 0.25, "seed": 0}}
    assert load_task("my-task", path, **options) == load_llamafactory(path, **options)
    examples = task_examples("my-task", path, tiny_tokenizer, cutoff_len=64, **options)
    assert len(examples) == 15
    with pytest.raises(LokiInputError, match="has no shipped data"):
        load_task("my-task", None, **options)


def test_the_worked_examples_data_is_its_generators_and_loads_as_alpaca():
    import runpy
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    shipped = root / "data" / "example_task" / "train.json"
    rows = runpy.run_path(str(root / "data" / "make_example_task.py"))["rows"]()
    assert json.loads(shipped.read_text(encoding="utf-8")) == rows
    conversations = load_llamafactory(shipped, format="alpaca", part="all")
    assert len(conversations) == len({json.dumps(c) for c in conversations}) == 144
    assert {len(c) for c in conversations} == {2}  # one question, one bare answer
