"""The knowledge to protect as data: prompts files (both row kinds) and lm-eval tasks as KVA sets."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from conftest import build_tiny_tokenizer

from loki_pipeline.data.kva_prompt import encode_prompts
from loki_pipeline.data.kva_sets import attributed_set, load_kva_set
from loki_pipeline.data.lm_eval_mc import render_doc
from loki_pipeline.data.prompts import load_prompts
from loki_pipeline.errors import LokiInputError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "data" / "example_task" / "protect.jsonl"
HELLASWAG = REPO / "data" / "lm_eval" / "hellaswag" / "validation.jsonl"
SYSTEM = "Answer briefly."
ROWS = [
    {"prompt": "What is the capital of France?", "subject": "geography"},
    {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "I like maps."},
            {"role": "assistant", "content": "Me too."},
            {"role": "user", "content": "Which ocean is the largest?"},
        ],
        "subject": "geography",
    },
    {"prompt": "What is 7 times 8?", "question_id": "times"},
    {"messages": [{"role": "user", "content": "Name a noble gas."}], "subject": "science"},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def chatml(*turns: tuple[str, str], generation: bool = True) -> str:
    """The tiny tokenizer's ChatML text written out by hand: the oracle of the rendering."""
    text = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in turns)
    return text + ("<|im_start|>assistant\n" if generation else "")


def test_both_row_kinds_load_with_subjects_and_ids(tmp_path):
    items = load_prompts(write_jsonl(tmp_path / "p.jsonl", ROWS))
    assert [(i.question_id, i.subject) for i in items] == [
        ("geography/0", "geography"),
        ("geography/1", "geography"),
        ("times", "all"),  # no subject: one group, 'all'
        ("science/0", "science"),
    ]
    assert items[0].chat() == [{"role": "user", "content": ROWS[0]["prompt"]}]
    assert items[1].chat() == ROWS[1]["messages"]


def test_each_row_is_rendered_through_the_chat_template_with_the_generation_prompt(tmp_path):
    tok = build_tiny_tokenizer()
    items = load_prompts(write_jsonl(tmp_path / "p.jsonl", ROWS))
    expected = [
        chatml(("user", ROWS[0]["prompt"])),
        chatml(("system", SYSTEM), ("user", "I like maps."), ("assistant", "Me too."),
               ("user", "Which ocean is the largest?")),  # fmt: skip
        chatml(("user", ROWS[2]["prompt"])),
        chatml(("user", "Name a noble gas.")),
    ]
    got = encode_prompts(tok, items)
    assert [ids.tolist() for ids in got] == [
        tok(text, add_special_tokens=False).input_ids for text in expected
    ]


def test_plain_prompts_take_one_user_turn_and_refuse_a_chat_naming_it(tmp_path):
    tok = build_tiny_tokenizer()
    items = load_prompts(write_jsonl(tmp_path / "p.jsonl", ROWS))
    plain = encode_prompts(tok, items[2:3], prompt_format="plain")
    assert plain[0].tolist() == tok(ROWS[2]["prompt"], add_special_tokens=True).input_ids
    with pytest.raises(LokiInputError, match=r"p.jsonl: question_id 'geography/1': a chat of 4"):
        encode_prompts(tok, items, prompt_format="plain", source=str(tmp_path / "p.jsonl"))


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"subject": "x"}, "line 2: missing key 'prompt' or 'messages'"),
        ({"prompt": "a?", "messages": []}, "line 2: has both 'prompt' and 'messages'"),
        ({"prompt": "  "}, "line 2: 'prompt' must be a non-empty string"),
        ({"prompt": "a?", "subject": 3}, "line 2: 'subject' must be a non-empty string"),
        ({"messages": []}, "line 2: 'messages' must be a non-empty list"),
        ({"messages": [{"role": "user"}]}, r"line 2: messages\[0\]: missing key 'content'"),
        ({"messages": [{"content": "a?"}]}, r"line 2: messages\[0\]: missing key 'role'"),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]},
            r"line 2: messages\[1\]: role 'tool'",
        ),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]},
            r"line 2: messages\[1\]: a system message may only come first",
        ),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
            "line 2: the last message is 'assistant'; a KVA chat ends with a 'user' turn",
        ),
    ],
)
def test_a_bad_row_is_named_by_file_line_and_key(tmp_path, row, message):
    path = write_jsonl(tmp_path / "p.jsonl", [ROWS[0], row])
    with pytest.raises(LokiInputError, match=message) as err:
        load_prompts(path)
    assert str(path) in str(err.value)


def test_duplicate_ids_and_empty_files_are_refused(tmp_path):
    with pytest.raises(LokiInputError, match="line 2: duplicate question_id 'times'"):
        load_prompts(write_jsonl(tmp_path / "d.jsonl", [ROWS[2], ROWS[2]]))
    with pytest.raises(LokiInputError, match="empty data set"):
        load_prompts(write_jsonl(tmp_path / "e.jsonl", []))


def test_max_per_subject_keeps_the_first_of_each_subject_and_null_keeps_all(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", ROWS)
    spec = {"source": str(path), "format": "prompts", "split": "test"}
    capped = load_kva_set({**spec, "max_per_subject": 1})
    assert [i.question_id for i in capped] == ["geography/0", "times", "science/0"]
    assert len(load_kva_set({**spec, "max_per_subject": None})) == 4


def test_shipped_example_prompt_set_mixes_both_kinds_over_several_subjects():
    items = load_prompts(EXAMPLE)
    subjects = {i.subject for i in items}
    assert 60 <= len(items) <= 120 and 4 <= len(subjects) <= 8
    kinds = [len(i.chat()) > 1 or i.chat()[0]["role"] != "user" for i in items]
    assert 0 < sum(kinds) < len(items)  # chats and one-turn prompts
    rows = [json.loads(line) for line in EXAMPLE.read_text().splitlines()]
    assert {"messages" in r for r in rows} == {True, False}
    assert len(encode_prompts(build_tiny_tokenizer(), items, max_length=512)) == len(items)


def test_attributed_set_names_the_source_and_format():
    assert attributed_set("data/mmlu/mmlu_mini.jsonl", "mmlu", 114) == "MMLU (114 prompts)"
    assert (
        attributed_set("data/example_task/protect.jsonl", "prompts", 80)
        == "data/example_task/protect.jsonl (prompts, 80)"
    )


def test_an_unknown_format_is_a_schema_error():
    from loki_pipeline.schemas import validate_config

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    good = copy.deepcopy(config)
    good["kva"]["dataset"]["format"] = "prompts"
    validate_config(good)
    config["kva"]["dataset"]["format"] = "csv"
    with pytest.raises(LokiInputError, match=r"kva.*dataset.*format"):
        validate_config(config)


# --------------------------------------------------------------------------------------------
# lm-eval multiple-choice tasks


def hellaswag_prompt(row: dict) -> str:
    """The expected prompt, by hand: lm-eval's HellaSwag query and endings in the paper's
    MMLU prompt (the shipped items need none of HellaSwag's bracket clean-up)."""
    query = f"{row['activity_label']}: {row['ctx_a']} {row['ctx_b'].capitalize()}"
    options = "".join(f"{'ABCD'[i]}. {e}\n" for i, e in enumerate(row["endings"]))
    return (
        "There is a single choice question about Hellaswag. Answer the question by replying "
        f"A, B, C or D.\nQuestion: {query}\nChoices:\n{options}Answer: \n"
    )


def test_a_shipped_lm_eval_task_becomes_mmlu_style_prompts():
    rows = [json.loads(line) for line in HELLASWAG.read_text().splitlines()]
    spec = {"source": "local:hellaswag", "format": "lm_eval", "max_per_subject": 3}
    items = load_kva_set(spec)
    assert [(i.question_id, i.subject) for i in items] == [
        (f"hellaswag/{k}", "hellaswag") for k in range(3)
    ]
    assert [i.chat() for i in items] == [
        [{"role": "user", "content": hellaswag_prompt(row)}] for row in rows[:3]
    ]
    assert len(load_kva_set({**spec, "max_per_subject": None})) == len(rows)


def test_a_task_yaml_of_ones_own_loads_the_same_documents(tmp_path):
    from loki_pipeline.evaluate.general import official_tasks_dir

    task = tmp_path / "tasks" / "my_hellaswag.yaml"
    task.parent.mkdir()
    task.write_text(
        yaml.safe_dump({
            "include": str(official_tasks_dir() / "hellaswag" / "hellaswag.yaml"),
            "task": "my_hellaswag",
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {"validation": str(HELLASWAG)}},
            "training_split": None,
        })
    )  # fmt: skip
    items = load_kva_set({"source": str(task), "format": "lm_eval", "max_per_subject": 2})
    local = load_kva_set({"source": "local:hellaswag", "format": "lm_eval", "max_per_subject": 2})
    assert [i.question_id for i in items] == ["my_hellaswag/0", "my_hellaswag/1"]
    expected = [i.chat()[0]["content"].replace("Hellaswag", "My Hellaswag") for i in local]
    assert [i.chat()[0]["content"] for i in items] == expected


def test_options_that_are_letters_keep_the_tasks_own_question_text():
    # MedMCQA's doc_to_text lists the options itself; its doc_to_choice is ['A', 'B', 'C', 'D']
    text = "Question: Which vitamin is made in the skin?\nChoices:\nA. A\nB. C\nC. D\nD. K\nAnswer:"
    assert render_doc("medmcqa", text, ["A", "B", "C", "D"], "doc 0") == (
        "There is a single choice question about Medmcqa. Answer the question by replying "
        f"A, B, C or D.\n{text}\n"
    )
    two = render_doc("yes_no", "Is the sky blue?", ["yes", "no"], "doc 0")
    assert "by replying A or B.\nQuestion: Is the sky blue?\nChoices:\nA. yes\nB. no\n" in two


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("local:winogrande", "not the question text .*winogrande"),
        ("local:gsm8k", "is generate_until; format lm_eval takes multiple-choice tasks"),
        ("local:mmlu", "ships local items for"),
        ("missing/task.yaml", "missing/task.yaml does not exist"),
        ("mmlu", "'mmlu': an lm-eval group of tasks; name one of its tasks"),
        ("no_such_task", "'no_such_task': not an lm-eval task name"),
    ],
)
def test_unsupported_lm_eval_sources_are_refused_by_name(source, message):
    with pytest.raises(LokiInputError, match=message):
        load_kva_set({"source": source, "format": "lm_eval", "max_per_subject": 2})
