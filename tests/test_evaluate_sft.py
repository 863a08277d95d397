"""A task of the user's is scored on its held-out rows (loss, perplexity, exact match) and on
lm-eval tasks, on a tiny checkpoint. The loss is checked against transformers' own loss with the
prompt masked, the answer's tokens against the chat template rendered with and without it."""

from __future__ import annotations

import json
import math

import pytest
import torch

from loki_pipeline.data.llamafactory import read_llamafactory, split_part
from loki_pipeline.errors import LokiInputError
from loki_pipeline.evaluate import generation
from loki_pipeline.evaluate.sft import SftEvalSettings, answer_losses, evaluate_heldout, prepare
from loki_pipeline.tasks.driver import run_task_eval
from loki_pipeline.tasks.settings import TaskEvalSettings

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"},
     {"role": "assistant", "content": "Paris"}],
    [{"role": "system", "content": "Be brief."},
     {"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there"},
     {"role": "user", "content": "Capital of Japan?"}, {"role": "assistant", "content": "Tokyo"}],
]  # fmt: skip


def _answer_ids(tokenizer, messages):
    """The answer's tokens: the full render past the prompt's, up to and including <|im_end|>."""
    full = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
    prompt = tokenizer.apply_chat_template(
        messages[:-1], tokenize=True, add_generation_prompt=True, return_dict=False
    )
    assert full[: len(prompt)] == prompt
    rest = full[len(prompt) :]
    end = rest.index(tokenizer.convert_tokens_to_ids("<|im_end|>"))
    return full, len(prompt), rest[: end + 1]


def test_answer_loss_is_transformers_loss_on_the_last_turn_only(tiny_llama, tiny_tokenizer):
    got = answer_losses(tiny_llama, tiny_tokenizer, CONVERSATIONS, batch_size=2)
    for messages, (loss_sum, tokens) in zip(CONVERSATIONS, got, strict=True):
        full, start, answer = _answer_ids(tiny_tokenizer, messages)
        labels = [-100] * len(full)
        labels[start : start + len(answer)] = answer
        with torch.no_grad():
            out = tiny_llama(input_ids=torch.tensor([full]), labels=torch.tensor([labels]))
        assert tokens == len(answer)
        assert loss_sum == pytest.approx(float(out.loss) * len(answer), rel=1e-5)


def test_exact_match_compares_stripped_answers_and_decodes_answer_length_plus_margin(
    tiny_llama, tiny_tokenizer, monkeypatch
):
    seen = {}

    def fake(model, tokenizer, prompts, *, max_new_tokens, batch_size):
        seen.update(prompts=prompts, caps=max_new_tokens)
        return [" Paris\n", "Tokyo, Japan"]

    monkeypatch.setattr(generation, "generate_greedy", fake)
    items = [("0", CONVERSATIONS[0]), ("7", CONVERSATIONS[1])]
    metrics, records = evaluate_heldout(
        tiny_llama, tiny_tokenizer, items, SftEvalSettings(answer_margin=5)
    )
    assert [r["exact_match"] for r in records] == [True, False]
    assert [r["id"] for r in records] == ["0", "7"]
    assert seen["prompts"] == [c[:-1] for c in CONVERSATIONS]  # the answer is not in the prompt
    answers = [len(_answer_ids(tiny_tokenizer, c)[2]) for c in CONVERSATIONS]
    assert seen["caps"] == [n + 5 for n in answers]
    total = sum(r["loss"] for r in records) / sum(r["tokens"] for r in records)
    assert metrics == {"exact_match": 0.5, "loss": total, "perplexity": math.exp(total)}


def _data(tmp_path, n=20):
    rows = [{"instruction": f"Capital number {i}?", "input": "", "output": f"City {i}"}
            for i in range(n)]  # fmt: skip
    path = tmp_path / "train.json"
    path.write_text(json.dumps(rows))
    return {"source": str(path), "format": "alpaca"}


def test_task_json_of_a_task_of_your_own_scores_exactly_the_heldout_rows(tiny_checkpoint, tmp_path):
    data = _data(tmp_path)
    heldout = {"fraction": 0.25, "seed": 2}
    settings = TaskEvalSettings(
        tasks={"my-task": SftEvalSettings(data=data, heldout=heldout, answer_margin=2)},
        batch_size=4, threads=1, device="cpu",
    )  # fmt: skip
    out = run_task_eval(tiny_checkpoint, tmp_path / "task.json", settings, names={"run": "base"})
    assert json.loads((tmp_path / "task.json").read_text()) == out
    summary = out["tasks"]["my-task"]
    assert summary["kind"] == "sft" and summary["primary_metric"] == "exact_match"
    assert summary["percent"] == ["exact_match"]
    assert summary["lower_is_better"] == ["loss", "perplexity"]
    rows = read_llamafactory(data["source"], format="alpaca")
    held = {str(i) for i, _, _ in split_part(rows, heldout, "heldout")}
    trained = {str(i) for i, _, _ in split_part(rows, heldout, "train")}
    ids = {r["id"] for r in summary["items"]}
    assert ids == held and not ids & trained and len(ids) == 5
    assert summary["counts"] == {"items": 5, "tokens": sum(r["tokens"] for r in summary["items"])}
    metrics = summary["metrics"]
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]))
    assert summary["settings"]["heldout"] == heldout
    assert "held-out 5 rows" in summary["benchmark"]


def test_nothing_to_evaluate_and_a_missing_data_block_are_refused_before_the_model(tmp_path):
    with pytest.raises(LokiInputError, match="tasks.<task>.train.source and .format"):
        prepare(SftEvalSettings(), tmp_path)
    nothing = SftEvalSettings(data=_data(tmp_path), heldout={"fraction": 0, "seed": 0})
    with pytest.raises(LokiInputError, match="held-out metric but eval.heldout.fraction is 0"):
        prepare(nothing, tmp_path)
    with pytest.raises(LokiInputError, match="task file .*nope.yaml does not exist"):
        prepare(SftEvalSettings(data=_data(tmp_path), lm_eval=["nope.yaml"]), tmp_path)


def test_an_lm_eval_task_of_your_own_joins_the_metrics_with_its_per_item_scores(
    tiny_checkpoint, tmp_path
):
    docs = [{"question": f"Is {i} even?", "choices": ["yes", "no"], "answer": i % 2}
            for i in range(6)]  # fmt: skip
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    yaml_path = tmp_path / "my_mc.yaml"
    yaml_path.write_text(
        "task: my_mc\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {tmp_path / 'mc.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        "doc_to_text: '{{question}}'\ndoc_to_choice: '{{choices}}'\ndoc_to_target: '{{answer}}'\n"
        "metric_list:\n  - metric: acc\n"
    )
    settings = SftEvalSettings(
        data=_data(tmp_path), heldout={"fraction": 0.2, "seed": 0}, lm_eval=[str(yaml_path)],
        primary_metric="my_mc/acc,none",
    )  # fmt: skip
    out = run_task_eval(
        tiny_checkpoint, tmp_path / "task.json",
        TaskEvalSettings(tasks={"t": settings}, batch_size=2, threads=1, device="cpu"),
    )  # fmt: skip
    summary = out["tasks"]["t"]
    assert summary["primary_metric"] == "my_mc/acc,none"
    assert {"exact_match", "loss", "perplexity", "my_mc/acc,none"} <= set(summary["metrics"])
    per_item = summary["lm_eval_items"]["my_mc/acc,none"]
    assert len(per_item) == 6 and set(per_item) <= {0.0, 1.0}
    assert summary["metrics"]["my_mc/acc,none"] == pytest.approx(sum(per_item) / 6)
    assert "my_mc/acc,none" in summary["percent"] and summary["counts"]["my_mc"] == 6
    assert "lm-eval my_mc" in summary["benchmark"]
