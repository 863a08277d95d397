"""The shard runner: real checkpoint + data file in, resumable HDF5 out, bad input caught early."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from conftest import build_tiny_model

from loki_pipeline import cli
from loki_pipeline.data.mmlu import encode_prompt, load_mmlu
from loki_pipeline.errors import LokiBusyError, LokiInputError
from loki_pipeline.kva import attribution
from loki_pipeline.kva.runner import run_kva_shard
from loki_pipeline.kva.settings import KVASettings
from loki_pipeline.kva.storage import gather_shards, load_kva, partial_path, stale_path
from loki_pipeline.models.loading import context_length, load_model

SUBJECTS = ["astronomy", "virology", "world_religions"]


@pytest.fixture
def mmlu_file(tmp_path):
    path = tmp_path / "mini.jsonl"
    rows = [
        {
            "question": f"Toy question {i} about {subject}?",
            "subject": subject,
            "choices": ["one", "two", "three", "four"],
            "answer": i % 4,
        }
        for i, subject in enumerate(SUBJECTS * 2)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(model_dir, data, out, shard=0, **kw):
    dataset = data if isinstance(data, dict) else {"source": str(data)}
    settings = KVASettings(**{"dataset": dataset, "steps": 2, "device": "cpu", **kw})
    return run_kva_shard(model_dir, out, settings, shard=shard)


def test_shards_gathered_equal_direct_attribution_of_every_prompt(
    tiny_checkpoint, mmlu_file, tmp_path
):
    paths = [
        run(tiny_checkpoint, mmlu_file, tmp_path / f"{s}.h5", shard=s, num_shards=2)
        for s in range(2)
    ]
    gather_shards(paths, tmp_path / "kva.h5")
    data = load_kva(tmp_path / "kva.h5")

    items = load_mmlu(mmlu_file)
    model, tok = load_model(tiny_checkpoint)
    assert data.question_id == [it.question_id for it in items]
    assert data.subject == [it.subject for it in items]
    for k, item in enumerate(items):
        ids = encode_prompt(tok, item)
        direct = attribution.attribute_prompt(model, ids, steps=2)
        np.testing.assert_allclose(
            data.attributions[k], direct.attributions.numpy(), rtol=1e-5, atol=1e-9
        )
        assert data.predicted_token[k] == direct.predicted_token
        assert data.prompt_length[k] == len(ids)
        assert data.completeness_gap[k] == pytest.approx(direct.completeness_gap, rel=1e-4)
    assert data.attrs["model"] == tiny_checkpoint.name
    assert data.attrs["num_layers"] == 3 and data.attrs["d_model"] == 32


@pytest.mark.parametrize("batch_prompts", [1, 4])
def test_killed_run_resumes_where_it_stopped(
    tiny_checkpoint, mmlu_file, tmp_path, monkeypatch, batch_prompts
):
    full = run(tiny_checkpoint, mmlu_file, tmp_path / "full.h5")

    calls = {"batches": 0}
    real = attribution.attribute_prompts

    def dies_in_the_second_batch(model, prompts, **kw):
        if calls["batches"] == 1:
            raise KeyboardInterrupt
        calls["batches"] += 1
        return real(model, prompts, **kw)

    out = tmp_path / "killed.h5"
    monkeypatch.setattr(attribution, "attribute_prompts", dies_in_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_checkpoint, mmlu_file, out, batch_prompts=batch_prompts)
    assert not out.exists()
    with h5py.File(partial_path(out), "r") as f:
        assert f.attrs["num_samples"] == batch_prompts  # the first batch was kept

    counted = {"prompts": 0}

    def counting(model, prompts, **kw):
        counted["prompts"] += len(prompts)
        return real(model, prompts, **kw)

    monkeypatch.setattr(attribution, "attribute_prompts", counting)
    run(tiny_checkpoint, mmlu_file, out, batch_prompts=batch_prompts)
    assert counted["prompts"] == len(SUBJECTS * 2) - batch_prompts  # only the rest was computed
    a, b = load_kva(out), load_kva(full)
    assert a.question_id == b.question_id
    if batch_prompts == 1:
        np.testing.assert_array_equal(a.attributions, b.attributions)
    else:  # other matmul shapes: the same values up to float rounding
        np.testing.assert_allclose(a.attributions, b.attributions, rtol=1e-4, atol=1e-9)
    np.testing.assert_array_equal(a.predicted_token, b.predicted_token)


def test_out_of_memory_halves_the_batch_and_loses_nothing(
    tiny_checkpoint, mmlu_file, tmp_path, monkeypatch, caplog
):
    real = attribution.attribute_prompts
    sizes = []

    def fits_two_at_most(model, prompts, **kw):
        sizes.append(len(prompts))
        if len(prompts) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return real(model, prompts, **kw)

    monkeypatch.setattr(attribution, "attribute_prompts", fits_two_at_most)
    out = run(tiny_checkpoint, mmlu_file, tmp_path / "s.h5", batch_prompts=5)
    assert sizes == [5, 2, 2, 2]  # 6 prompts: one failed try, then pairs
    assert "2 prompts per pass" in caplog.text
    full = run(tiny_checkpoint, mmlu_file, tmp_path / "full.h5")
    np.testing.assert_allclose(
        load_kva(out).attributions, load_kva(full).attributions, rtol=1e-4, atol=1e-9
    )

    def never_fits(model, prompts, **kw):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(attribution, "attribute_prompts", never_fits)
    with pytest.raises(torch.OutOfMemoryError):
        run(tiny_checkpoint, mmlu_file, tmp_path / "never.h5", batch_prompts=3)


def kill_after_first_batch(monkeypatch, run_it):
    """Run ``run_it()`` with the attribution dying in its second batch (a killed job)."""
    real = attribution.attribute_prompts
    calls = []

    def dies_in_the_second_batch(model, prompts, **kw):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(model, prompts, **kw)

    monkeypatch.setattr(attribution, "attribute_prompts", dies_in_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        run_it()
    monkeypatch.setattr(attribution, "attribute_prompts", real)


def test_partial_shard_with_other_step_count_restarts(
    tiny_checkpoint, mmlu_file, tmp_path, monkeypatch, caplog
):
    out = tmp_path / "s.h5"
    kill_after_first_batch(monkeypatch, lambda: run(tiny_checkpoint, mmlu_file, out, steps=3))
    assert partial_path(out).exists()
    run(tiny_checkpoint, mmlu_file, out, steps=2)
    assert "steps (3 -> 2)" in caplog.text and "starting this shard over" in caplog.text
    with h5py.File(stale_path(out), "r") as f:  # the old rows are kept aside, not destroyed
        assert f.attrs["steps"] == 3 and f.attrs["num_samples"] == 1
    fresh = run(tiny_checkpoint, mmlu_file, tmp_path / "fresh.h5", steps=2)
    np.testing.assert_array_equal(load_kva(out).attributions, load_kva(fresh).attributions)


def replace_weights(checkpoint, seed: int) -> None:
    """New random weights in ``checkpoint``; its config.json stays byte for byte the same."""
    config = (checkpoint / "config.json").read_bytes()
    build_tiny_model("llama", seed=seed).save_pretrained(checkpoint, safe_serialization=True)
    (checkpoint / "config.json").write_bytes(config)


def test_changed_weights_restart_the_partial_and_redo_the_finished_shard(
    tiny_checkpoint, mmlu_file, tmp_path, monkeypatch, caplog
):
    few = {"source": str(mmlu_file), "max_per_subject": 1}
    done = run(tiny_checkpoint, few, tmp_path / "done.h5")
    partial = tmp_path / "partial.h5"
    kill_after_first_batch(monkeypatch, lambda: run(tiny_checkpoint, few, partial))
    old = load_kva(done).attributions

    replace_weights(tiny_checkpoint, seed=1)
    caplog.clear()
    run(tiny_checkpoint, few, partial)
    assert "inputs changed: model content" in caplog.text and stale_path(partial).exists()
    caplog.clear()
    run(tiny_checkpoint, few, done)
    assert "already finished" not in caplog.text and "computing it again" in caplog.text
    fresh = load_kva(run(tiny_checkpoint, few, tmp_path / "fresh.h5")).attributions
    assert not np.allclose(fresh, old)
    np.testing.assert_array_equal(load_kva(partial).attributions, fresh)
    np.testing.assert_array_equal(load_kva(done).attributions, fresh)


def test_changed_dataset_restarts_the_partial_shard(
    tiny_checkpoint, mmlu_file, tmp_path, monkeypatch, caplog
):
    out = tmp_path / "s.h5"
    kill_after_first_batch(monkeypatch, lambda: run(tiny_checkpoint, mmlu_file, out))
    # Edit a question not yet attributed: the same ids, other content.
    rows = [json.loads(line) for line in mmlu_file.read_text().splitlines()]
    rows[-1]["question"] = "A different question?"
    mmlu_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run(tiny_checkpoint, mmlu_file, out)
    assert "inputs changed: dataset content" in caplog.text and stale_path(out).exists()
    fresh = run(tiny_checkpoint, mmlu_file, tmp_path / "fresh.h5")
    np.testing.assert_array_equal(load_kva(out).attributions, load_kva(fresh).attributions)


def test_second_run_on_the_same_shard_is_told_it_is_in_use(
    tiny_checkpoint, mmlu_file, tmp_path, monkeypatch, capsys, lock_held_elsewhere
):
    out = tmp_path / "s.h5"
    kill_after_first_batch(monkeypatch, lambda: run(tiny_checkpoint, mmlu_file, out))
    before = partial_path(out).read_bytes()
    with lock_held_elsewhere(out):  # another run holds the shard
        with pytest.raises(LokiBusyError, match="in use by another run") as err:
            run(tiny_checkpoint, mmlu_file, out)
        assert "delete" not in str(err.value)
        argv = ["kva", "--model", str(tiny_checkpoint), "--dataset", str(mmlu_file)]
        assert cli.main([*argv, "--out", str(out), "--steps", "2", "--device", "cpu"]) == 2
        assert "in use by another run" in capsys.readouterr().err
    assert partial_path(out).read_bytes() == before  # untouched
    run(tiny_checkpoint, mmlu_file, out)
    assert load_kva(out).attributions.shape[0] == len(SUBJECTS * 2)


def test_prompts_longer_than_the_context_are_refused_before_the_model_loads(
    tiny_checkpoint, tmp_path, monkeypatch
):
    rows = [
        {"question": q, "subject": "astronomy", "choices": ["a", "b", "c", "d"], "answer": 0}
        for q in ["Short?", "Long " * 600 + "?", "Short too?", "Longer " * 700 + "?"]
    ]
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    import loki_pipeline.models.loading as loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    out = tmp_path / "s.h5"
    with pytest.raises(LokiInputError, match=r"2 of 4 prompts .* context of 512 tokens") as err:
        run(tiny_checkpoint, data, out)
    assert "'astronomy/1'" in str(err.value) and str(data) in str(err.value)
    assert not partial_path(out).exists() and not out.exists()


def test_context_length_reads_nested_text_config():
    assert context_length({"max_position_embeddings": 4096}) == 4096
    assert context_length({"text_config": {"max_position_embeddings": 8192}}) == 8192
    nested = {"max_position_embeddings": 4096, "text_config": {"max_position_embeddings": 2048}}
    assert context_length(nested) == 2048
    assert context_length({"model_type": "llama"}) is None


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"steps": 0}, "steps"),
        ({"method": "magic"}, "method"),
        ({"quadrature": "simpson"}, "quadrature"),
        ({"shard": 2, "num_shards": 2}, "shard"),
        ({"dtype": "int8"}, "dtype"),
        ({"batch_prompts": 0}, "batch_prompts"),
    ],
)
def test_bad_arguments_are_rejected(tiny_checkpoint, mmlu_file, tmp_path, kw, match):
    with pytest.raises(LokiInputError, match=match):
        run(tiny_checkpoint, mmlu_file, tmp_path / "s.h5", **kw)


def test_cli_runs_a_shard_and_reports_bad_input(tiny_checkpoint, mmlu_file, tmp_path, capsys):
    out = tmp_path / "0.h5"
    argv = [
        "kva",
        "--model",
        str(tiny_checkpoint),
        "--dataset",
        str(mmlu_file),
        "--out",
        str(out),
        "--steps",
        "2",
        "--device",
        "cpu",
        "--max-per-subject",
        "1",
        "--batch-prompts",
        "2",
    ]
    assert cli.main(argv) == 0
    assert load_kva(out).attributions.shape == (len(SUBJECTS), 3, 32)
    assert cli.main(["kva-gather", str(out), "--out", str(tmp_path / "kva.h5")]) == 0
    assert cli.main([*argv[:-4], "--steps", "0"]) == 2
    assert "steps" in capsys.readouterr().err


def test_plain_prompts_attribute_a_model_without_a_chat_template(
    tiny_checkpoint, mmlu_file, tmp_path
):
    from transformers import AutoTokenizer

    from loki_pipeline.data.mmlu import format_prompt

    plain_dir = tmp_path / "no-template"  # a base model such as Llama-2-7B: no chat template
    model, tok = load_model(tiny_checkpoint)
    tok.chat_template = None
    model.save_pretrained(plain_dir)
    tok.save_pretrained(plain_dir)
    assert not AutoTokenizer.from_pretrained(plain_dir).chat_template
    with pytest.raises(LokiInputError, match="has no chat template.*kva.prompt_format: plain"):
        run(plain_dir, mmlu_file, tmp_path / "chat.h5")
    out = run(plain_dir, mmlu_file, tmp_path / "0.h5",
              prompt_format={plain_dir.name: "plain", "other": "chat"})  # fmt: skip
    gather_shards([out], tmp_path / "kva.h5")
    data = load_kva(tmp_path / "kva.h5")
    assert json.loads(data.attrs["inputs"])["prompt_format"] == "plain"
    for k, item in enumerate(load_mmlu(mmlu_file)):
        ids = torch.tensor(tok(format_prompt(item))["input_ids"])  # the text as it is
        direct = attribution.attribute_prompt(model, ids, steps=2)
        np.testing.assert_allclose(
            data.attributions[k], direct.attributions.numpy(), rtol=1e-5, atol=1e-9
        )
        assert data.prompt_length[k] == len(ids)


def test_chat_prompts_keep_the_inputs_of_files_made_before_prompt_format(
    tiny_checkpoint, mmlu_file, tmp_path
):
    data_path = run(tiny_checkpoint, mmlu_file, tmp_path / "0.h5")
    with h5py.File(data_path) as f:
        assert "prompt_format" not in json.loads(f.attrs["inputs"])
    assert KVASettings(prompt_format={"x": "plain"}).format_for("y") == "chat"
