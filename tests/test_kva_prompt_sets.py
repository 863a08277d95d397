"""KVA over the knowledge to protect in any format: a prompts file (both row kinds), an
lm-eval task; attributed exactly as MMLU prompts are, checked against the hooked reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_data_kva_sets import ROWS, SYSTEM, chatml, hellaswag_prompt, write_jsonl
from test_kva_runner import kill_after_first_batch, mmlu_file, run  # noqa: F401 (a fixture)

from loki_pipeline import cli
from loki_pipeline.io import config_hash
from loki_pipeline.kva.attribution import attribute_prompt
from loki_pipeline.kva.storage import gather_shards, load_kva, stale_path
from loki_pipeline.models.loading import load_model

HAND_RENDERED = [  # ROWS as the tiny ChatML template renders them, written out by hand
    chatml(("user", "What is the capital of France?")),
    chatml(("system", SYSTEM), ("user", "I like maps."), ("assistant", "Me too."),
           ("user", "Which ocean is the largest?")),  # fmt: skip
    chatml(("user", "What is 7 times 8?")),
    chatml(("user", "Name a noble gas.")),
]


def assert_matches_reference(data, model, tok, texts):
    """Every row of ``data`` against the hooked reference on the hand-tokenized text."""
    for k, text in enumerate(texts):
        ids = torch.tensor(tok(text, add_special_tokens=False).input_ids)
        oracle = attribute_prompt(model, ids, steps=2, method="reference")
        np.testing.assert_allclose(
            data.attributions[k], oracle.attributions.numpy(), rtol=1e-4, atol=1e-8
        )
        assert data.predicted_token[k] == oracle.predicted_token
        assert data.prompt_length[k] == len(ids)


def test_kva_over_a_prompts_file_with_both_row_kinds_equals_the_reference(
    tiny_checkpoint, tmp_path
):
    path = write_jsonl(tmp_path / "protect.jsonl", ROWS)
    dataset = {"source": str(path), "format": "prompts"}
    shards = [
        run(tiny_checkpoint, dataset, tmp_path / f"{s}.h5", shard=s, num_shards=2, batch_prompts=2)
        for s in range(2)
    ]
    data = load_kva(gather_shards(shards, tmp_path / "kva.h5"))
    assert data.question_id == ["geography/0", "geography/1", "times", "science/0"]
    assert data.subject == ["geography", "geography", "all", "science"]
    assert (data.attrs["dataset"], data.attrs["dataset_format"]) == (str(path), "prompts")
    assert json.loads(data.attrs["inputs"])["dataset_format"] == "prompts"
    model, tok = load_model(tiny_checkpoint)
    assert_matches_reference(data, model, tok, HAND_RENDERED)


def test_a_changed_prompt_file_makes_the_partial_shard_stale(
    tiny_checkpoint, tmp_path, monkeypatch, caplog
):
    path = write_jsonl(tmp_path / "protect.jsonl", ROWS)
    dataset = {"source": str(path), "format": "prompts"}
    out = tmp_path / "s.h5"
    kill_after_first_batch(monkeypatch, lambda: run(tiny_checkpoint, dataset, out))
    edited = json.loads(json.dumps(ROWS))
    edited[1]["messages"][0]["content"] = "Answer in French."  # a chat not yet attributed
    write_jsonl(path, edited)
    run(tiny_checkpoint, dataset, out)
    assert "inputs changed: dataset content" in caplog.text and stale_path(out).exists()
    fresh = run(tiny_checkpoint, dataset, tmp_path / "fresh.h5")
    np.testing.assert_array_equal(load_kva(out).attributions, load_kva(fresh).attributions)


def test_mmlu_shards_keep_the_dataset_fingerprint_they_had(tiny_checkpoint, mmlu_file, tmp_path):  # noqa: F811
    """Shards made before kva.dataset.format existed stay finished: same inputs as then."""
    rows = [json.loads(line) for line in mmlu_file.read_text().splitlines()]
    count = {}
    before = []
    for r in rows:  # the pre-format fingerprint: [id, subject, question, choices, answer]
        n = count.setdefault(r["subject"], 0)
        count[r["subject"]] += 1
        before.append([f"{r['subject']}/{n}", r["subject"], r["question"], r["choices"], r["answer"]])
    data = load_kva(run(tiny_checkpoint, mmlu_file, tmp_path / "0.h5"))
    inputs = json.loads(data.attrs["inputs"])
    assert inputs["dataset"] == config_hash(before) and "dataset_format" not in inputs
    assert data.attrs["dataset_format"] == "mmlu"


def test_kva_over_an_lm_eval_task_attributes_its_mmlu_style_prompts(tiny_checkpoint, tmp_path):
    from test_data_kva_sets import HELLASWAG

    rows = [json.loads(line) for line in HELLASWAG.read_text().splitlines()][:2]
    dataset = {"source": "local:hellaswag", "format": "lm_eval", "max_per_subject": 2}
    data = load_kva(run(tiny_checkpoint, dataset, tmp_path / "0.h5"))
    assert data.question_id == ["hellaswag/0", "hellaswag/1"]
    assert data.attrs["dataset"] == "local:hellaswag"
    model, tok = load_model(tiny_checkpoint)
    assert_matches_reference(data, model, tok, [chatml(("user", hellaswag_prompt(r))) for r in rows])


def test_cli_attributes_a_prompts_file(tiny_checkpoint, tmp_path, capsys):
    path = write_jsonl(tmp_path / "protect.jsonl", ROWS)
    out = tmp_path / "0.h5"
    argv = ["kva", "--model", str(tiny_checkpoint), "--dataset", str(path), "--out", str(out),
            "--steps", "2", "--device", "cpu", "--max-per-subject", "1"]  # fmt: skip
    assert cli.main([*argv, "--dataset-format", "prompts"]) == 0
    assert load_kva(out).question_id == ["geography/0", "times", "science/0"]
    assert cli.main(argv) == 2  # read as MMLU: the row's missing field is named
    assert "line 1: missing field(s) question" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main([*argv, "--dataset-format", "csv"])
