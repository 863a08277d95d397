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


#: Tolerance of an attribution relative to the scale (largest magnitude) of its layer's row.
ROW_RTOL = 1e-5


def assert_close_to_row_scale(actual, expected, rtol=ROW_RTOL):
    """Each layer's attributions within ``rtol`` x that layer's largest |expected| of the
    expected ones, as the backends' checks compare (relative to the attribution's scale, not
    element by element).

    The runner's ``exact`` backend batches prompts of different lengths with padding, the
    reference hooks one prompt at a time: float32 sums in another order differ by about 1e-6 of
    the row's scale (measured: at most 1.6e-6 here), which is 2e-4 of an element 100 times
    smaller than the row's largest; an element-wise rtol therefore fails on a CPU whose kernels
    round differently (a fresh install: 7.2990e-05 against 7.2972e-05). 1e-5 of the row's scale
    is 6x that noise and, for every element above a tenth of the largest, tighter than 1e-4
    element-wise."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    scale = np.abs(expected).max(axis=-1, keepdims=True)
    assert np.all(scale > 0), "a layer's attributions are all 0: no scale to compare against"
    error = np.abs(actual - expected) / scale
    worst = np.unravel_index(np.argmax(error), error.shape)
    assert error[worst] <= rtol, (
        f"attribution {worst}: {actual[worst]:.6e} vs {expected[worst]:.6e}, "
        f"{error[worst]:.2e} of its row's scale {scale[worst[:-1]][0]:.3e} (tolerance {rtol:g})"
    )


def assert_matches_reference(data, model, tok, texts):
    """Every row of ``data`` against the hooked reference on the hand-tokenized text."""
    for k, text in enumerate(texts):
        ids = torch.tensor(tok(text, add_special_tokens=False).input_ids)
        oracle = attribute_prompt(model, ids, steps=2, method="reference")
        assert_close_to_row_scale(data.attributions[k], oracle.attributions.numpy())
        assert data.predicted_token[k] == oracle.predicted_token
        assert data.prompt_length[k] == len(ids)


def test_row_scale_comparison_passes_float32_noise_and_catches_real_errors():
    """The fresh install's element (7.2990e-05 vs 7.2972e-05: 2.45e-4 element-wise) in a row of
    scale 1e-2 passes; a wrong element, a scaled row or swapped rows do not."""
    rng = np.random.default_rng(0)
    expected = rng.normal(0, 3e-3, size=(3, 32))
    expected[1, 0], expected[1, 5] = 1e-2, 7.2972e-05
    noisy = expected.copy()
    noisy[1, 5] = 7.2990e-05
    with pytest.raises(AssertionError):  # what the element-wise check did
        np.testing.assert_allclose(noisy, expected, rtol=1e-4, atol=1e-8)
    assert_close_to_row_scale(noisy, expected)
    for broken in (
        np.where(np.arange(32) == 7, expected * 1.001 + 3e-7, expected),  # one element off
        expected * (1 + 2e-5),  # every element 2e-5 too large
        expected[[1, 0, 2]],  # layers swapped
        expected[:, ::-1],  # rows reordered within a layer
    ):
        with pytest.raises(AssertionError):
            assert_close_to_row_scale(broken, expected)


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
