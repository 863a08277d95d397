"""Method registry, settings, the resumable loop and a whole run on a tiny checkpoint."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_model
from transformers import AutoModelForCausalLM

from loki_pipeline.errors import LokiInputError
from loki_pipeline.select.selection_file import Selection
from loki_pipeline.train import parse_method, resolve_settings
from loki_pipeline.train.settings import TrainSettings
from loki_pipeline.train.trainer import prepare_model, sft_loss, train_model

ROOT = Path(__file__).resolve().parents[1]


def synthetic_examples(n: int = 6, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = 6 + i % 4
        ids = torch.randint(3, 384, (length,), generator=g).tolist()
        labels = [-100] * 3 + ids[3:]
        out.append({"input_ids": ids, "labels": labels})
    return out


def positions(k: int = 3) -> Selection:
    return Selection(positions=[list(range(i, i + k)) for i in range(3)])


@pytest.mark.parametrize(
    "name,kind,strategy,q,rank",
    [
        ("loki_q10", "loki", "layer_balanced_low", 10.0, None),
        ("loki_global_high_q10", "loki", "global_high", 10.0, None),
        ("loki_lora_q30_r32", "loki*", "layer_balanced_low", 30.0, 32),
        ("loki_q2.5", "loki", "layer_balanced_low", 2.5, None),
        ("full", "full", None, None, None),
        ("dora_r16", "dora", None, None, 16),
        ("corda_r8", "corda", None, None, 8),
    ],
)
def test_method_names_parse_to_their_parts(name, kind, strategy, q, rank):
    m = parse_method(name)
    assert (m.kind, m.strategy, m.q, m.rank) == (kind, strategy, q, rank)


def test_selection_file_name_is_compact():
    assert parse_method("loki_q10").selection_name == "layer_balanced_low_q10"
    assert parse_method("loki_global_low_q2.5").selection_name == "global_low_q2.5"


@pytest.mark.parametrize("name", ["lokiq10", "loki_q0", "loki_q100", "loki_lora_q10", "lora", "x"])
def test_unknown_method_error_lists_the_grammar(name):
    with pytest.raises(LokiInputError, match=r"loki_lora_q\{q\}_r\{r\}.*pissa_r\{r\}"):
        parse_method(name)


def test_settings_resolve_task_then_method_overrides_and_scale_lr():
    training = {
        "learning_rate": 1e-4,
        "max_steps": 30,
        "tasks": {"toolace": {"cutoff_len": 1024}},
        "methods": {"loki*_q30*": {"lr_scale": 0.4}, "lora_*": {"learning_rate": 2e-4}},
    }
    s = resolve_settings(training, "toolace", "loki_q30")
    assert s.cutoff_len == 1024 and s.effective_lr == pytest.approx(4e-5)
    s = resolve_settings(training, "reranker", "lora_r16", max_steps=5)
    assert s.cutoff_len == 512 and s.effective_lr == pytest.approx(2e-4) and s.max_steps == 5
    with pytest.raises(LokiInputError, match="unknown training setting"):
        resolve_settings({"lr": 1}, "toolace", "full")
    with pytest.raises(LokiInputError, match="warmup_ratio"):
        resolve_settings({"warmup_ratio": 1.5}, "toolace", "full")


def test_a_method_pattern_may_name_the_task_so_scaling_applies_to_one_task_only():
    # the LoKI paper states the q-proportional rate for the reranker only (q=30: 0.4 x q=10)
    training = {"learning_rate": 1e-5, "methods": {"reranker-loki*_q30*": {"lr_scale": 0.4}}}
    assert resolve_settings(training, "reranker", "loki_q30").effective_lr == pytest.approx(4e-6)
    assert resolve_settings(training, "reranker", "loki_q10").effective_lr == pytest.approx(1e-5)
    assert resolve_settings(training, "toolace", "loki_q30").effective_lr == pytest.approx(1e-5)


def test_paper_config_scales_the_rate_with_q_for_the_reranker_only():
    import yaml

    from loki_pipeline.config import validate_config

    config = validate_config(yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()))

    def lr(task, method):
        return TrainSettings.from_config(config, task, method).effective_lr

    assert lr("reranker", "loki_q30") == pytest.approx(0.4 * lr("reranker", "loki_q10"))
    for method in ("loki_q20", "loki_q30", "loki_lora_q30_r32"):
        assert lr("toolace", method) == pytest.approx(lr("toolace", "loki_q10")) == 1e-5


def test_from_config_is_resolve_settings_over_the_whole_config():
    config = {
        "training": {"threads": 4, "max_steps": 30, "methods": {"lora_*": {"lr_scale": 0.5}}},
        "tasks": {"toolace": {"train": {"cutoff_len": 1024, "packing": True}}},
    }
    s = TrainSettings.from_config(config, "toolace", "lora_r16", max_steps=None, seed=7)
    assert (s.max_steps, s.cutoff_len, s.packing, s.lr_scale, s.seed) == (30, 1024, True, 0.5, 7)
    assert TrainSettings.from_config(config, "reranker", "full").cutoff_len == 512
    assert TrainSettings.from_config({}, "reranker", "full") == TrainSettings()


def test_sft_loss_equals_hf_loss_on_supervised_tokens(tiny_model):
    from loki_pipeline.train.trainer import pad_collate

    batch = pad_collate(synthetic_examples(3), pad_id=0)
    loss, n = sft_loss(tiny_model, batch)
    ref = tiny_model(**batch).loss
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    assert n == int((batch["labels"][:, 1:] != -100).sum())


@pytest.mark.parametrize("name", ["lora_r4", "dora_r4", "pissa_r4", "corda_r4", "loki_lora_q10_r2"])
def test_every_method_starts_from_the_base_models_function(name):
    base = build_tiny_model("llama")
    settings = TrainSettings(batch_size=2, calibration_samples=4)
    ids = torch.randint(0, 384, (2, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = base(ids).logits
    model = prepare_model(
        build_tiny_model("llama"),
        parse_method(name),
        settings,
        selection=positions(),
        calibration=synthetic_examples(),
    )
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref, rtol=1e-4, atol=1e-4)


def _trained(tmp_path, stop_at=None, ckpt="ckpt"):
    settings = TrainSettings(
        learning_rate=1e-2, max_steps=6, batch_size=2, save_every=2, warmup_ratio=0.2, seed=7
    )
    model = prepare_model(
        build_tiny_model("llama"), parse_method("loki_lora_q10_r2"), settings, selection=positions()
    )

    def on_step(step, row):
        if step == stop_at:
            raise KeyboardInterrupt  # a killed job

    rows = train_model(
        model,
        synthetic_examples(5),
        settings,
        checkpoint_dir=tmp_path / ckpt,
        on_step=on_step,
        progress=False,
    )
    return model, rows


def test_hold_out_is_seeded_disjoint_and_ceil_of_the_fraction():
    from loki_pipeline.train.trainer import hold_out

    examples = [{"input_ids": [i], "labels": [i]} for i in range(250)]
    train, val = hold_out(examples, 0.01, seed=42)
    assert len(val) == 3 and len(train) == 247  # ceil(2.5), as train_test_split
    ids = sorted(e["input_ids"][0] for e in train + val)
    assert ids == list(range(250))  # disjoint and complete
    assert hold_out(examples, 0.01, seed=42) == (train, val)
    assert hold_out(examples, 0.01, seed=1)[1] != val
    assert hold_out(examples, 0.0, seed=42) == (examples, [])
    with pytest.raises(LokiInputError, match="nothing left to train"):
        hold_out(examples[:1], 0.5, seed=0)


def test_validation_loss_is_logged_at_save_steps_and_equals_the_held_out_loss(tmp_path):
    settings = TrainSettings(learning_rate=1e-2, max_steps=5, batch_size=2, save_every=2, seed=7)
    model = prepare_model(build_tiny_model("llama"), parse_method("full"), settings)
    held = synthetic_examples(9, seed=3)[6:]
    rows = train_model(model, synthetic_examples(5), settings, progress=False, val_examples=held)
    assert [r["step"] for r in rows if r["val_loss"] is not None] == [2, 4, 5]
    # oracle: the model's own loss over all held-out supervised tokens at once
    ids = [torch.tensor(e["input_ids"]) for e in held]
    labels = [torch.tensor(e["labels"]) for e in held]
    with torch.no_grad():
        losses = [
            torch.nn.functional.cross_entropy(
                model(i[None]).logits[0, :-1], lab[1:], ignore_index=-100, reduction="sum"
            )
            for i, lab in zip(ids, labels, strict=True)
        ]
    tokens = sum(int((lab[1:] != -100).sum()) for lab in labels)
    assert rows[-1]["val_loss"] == pytest.approx(float(sum(losses)) / tokens, abs=1e-5)
    assert rows[1]["val_loss"] != rows[-1]["val_loss"]


def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path):
    straight, rows = _trained(tmp_path, ckpt="a")
    with pytest.raises(KeyboardInterrupt):
        _trained(tmp_path, stop_at=3, ckpt="b")  # last checkpoint at step 2
    resumed, resumed_rows = _trained(tmp_path, ckpt="b")
    assert [r["loss"] for r in resumed_rows] == [r["loss"] for r in rows]
    a = {n: p for n, p in straight.named_parameters() if p.requires_grad}
    b = {n: p for n, p in resumed.named_parameters() if p.requires_grad}
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0)
    assert any(p.abs().sum() > 0 for n, p in a.items() if "lora_A" in n)  # it did train


TOOLACE_ROWS = [
    {
        "system": 'You can call these tools: [{"name": "get_weather", "parameters": {"city": "str"}}]',
        "conversations": [
            {"from": "user", "value": f"Weather in city number {i}?"},
            {"from": "assistant", "value": f'[get_weather(city="C{i}")]'},
        ],
    }
    for i in range(6)
]


def test_loki_run_writes_mergeable_outputs_that_differ_only_in_selected_rows(
    tmp_path, tiny_checkpoint
):
    from loki_pipeline.train.run import run_training

    data = tmp_path / "toolace.json"
    data.write_text(json.dumps(TOOLACE_ROWS))
    sel = tmp_path / "layer_balanced_low_q10.json"
    pos = [[1, 5, 9], [0, 2, 4], [7, 8, 30]]
    sel.write_text(
        json.dumps(
            {
                "model": "tiny",
                "strategy": "layer_balanced_low",
                "q": 10,
                "num_layers": 3,
                "nodes_per_layer": 32,
                "positions": pos,
            }
        )
    )
    out = tmp_path / "run"
    settings = TrainSettings(learning_rate=1e-2, max_steps=3, batch_size=2, cutoff_len=128)
    run_training(
        tiny_checkpoint,
        "toolace",
        data,
        "loki_q10",
        out,
        settings,
        selection_path=sel,
        progress=False,
    )
    for name in (
        "adapter/loki_config.json",
        "merged/config.json",
        "train_log.csv",
        "loss.png",
        "trainable_params.json",
        "train_config.json",
    ):
        assert (out / name).is_file(), name
    counts = json.loads((out / "trainable_params.json").read_text())
    assert counts["trainable_params"] == 9 * 48
    # ... and the tables stage reads the same count from that file.
    from loki_pipeline.report.build import trainable_params

    assert trainable_params(out / "trainable_params.json") == 9 * 48
    assert not (tmp_path / ".checkpoints" / "run").exists()
    base = AutoModelForCausalLM.from_pretrained(tiny_checkpoint).state_dict()
    merged = AutoModelForCausalLM.from_pretrained(out / "merged").state_dict()
    for name, w in base.items():
        changed = (
            (merged[name] != w).any(dim=-1).nonzero().flatten().tolist() if w.dim() == 2 else []
        )
        if name.endswith("down_proj.weight"):
            assert changed == pos[int(name.split(".")[2])], name
        else:
            assert torch.equal(merged[name], w), name


def test_bad_inputs_fail_before_training(tmp_path, tiny_checkpoint):
    from loki_pipeline.train.run import run_training

    settings = TrainSettings(max_steps=1)
    with pytest.raises(LokiInputError, match="methods are"):
        run_training(tiny_checkpoint, "toolace", None, "lokii_q10", tmp_path / "o", settings)
    with pytest.raises(LokiInputError, match="--selection"):
        run_training(tiny_checkpoint, "toolace", None, "loki_q10", tmp_path / "o", settings)
    other = tmp_path / "sel.json"
    other.write_text(json.dumps({"model": "big", "positions": [[0]] * 30}))
    with pytest.raises(LokiInputError, match="another model"):
        run_training(
            tiny_checkpoint,
            "toolace",
            None,
            "loki_q10",
            tmp_path / "o",
            settings,
            selection_path=other,
        )
    assert not (tmp_path / "o").exists()


def test_cutoff_longer_than_the_models_context_is_capped_with_warnings(
    tmp_path, tiny_tokenizer, caplog
):
    from loki_pipeline.train.run import run_training

    model_dir = tmp_path / "short-context"
    build_tiny_model("llama", max_position_embeddings=110).save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    data = tmp_path / "toolace.json"
    data.write_text(json.dumps(TOOLACE_ROWS))  # 117 tokens each, the answer in the last 15
    settings = TrainSettings(max_steps=1, batch_size=2, cutoff_len=128)
    with caplog.at_level(logging.WARNING):
        run_training(model_dir, "toolace", data, "lora_r2", tmp_path / "run", settings)
    assert "longer than the model's context of 110 tokens" in caplog.text
    assert "6 of 6 examples truncated to 110 tokens" in caplog.text
    config = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert config["cutoff_len_effective"] == 110 and config["settings"]["cutoff_len"] == 128


def test_a_run_holds_out_val_size_and_logs_its_loss(tmp_path, tiny_checkpoint):
    import csv

    from loki_pipeline.train.run import run_training

    data = tmp_path / "toolace.json"
    data.write_text(json.dumps(TOOLACE_ROWS))  # 6 examples
    settings = TrainSettings(max_steps=2, batch_size=2, save_every=1, val_size=0.2)
    run_training(tiny_checkpoint, "toolace", data, "full", tmp_path / "run", settings)
    config = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert (config["num_examples"], config["num_val_examples"]) == (4, 2)  # ceil(1.2) held out
    rows = list(csv.DictReader((tmp_path / "run" / "train_log.csv").open()))
    assert [float(r["val_loss"]) > 0 for r in rows] == [True, True]


def test_nq_open_rows_become_question_answer_prompts(tmp_path):
    from loki_pipeline.data.nq_open import nq_open_text

    row = {"question": "who painted the mona lisa", "answer": ["Leonardo da Vinci", "da Vinci"]}
    assert (
        nq_open_text(row, "x") == "Question: who painted the mona lisa?\nAnswer: Leonardo da Vinci"
    )
    with pytest.raises(LokiInputError, match="f.jsonl line 3: NQ-Open row needs 'answer'"):
        nq_open_text({"question": "q", "answer": []}, "f.jsonl line 3")
    with pytest.raises(LokiInputError, match="needs a non-empty 'question'"):
        nq_open_text({"answer": ["a"]}, "f.jsonl line 1")


@pytest.mark.parametrize("calibration", [None, "data/nq_open/calibration.jsonl"])
def test_corda_calibrates_on_task_data_or_on_nq_open(
    tmp_path, tiny_checkpoint, tiny_tokenizer, monkeypatch, calibration
):
    from loki_pipeline.train import trainer
    from loki_pipeline.train.run import run_training

    seen, original = {}, trainer.prepare_model

    def capture(model, method, settings, *, selection=None, calibration=None):
        seen["calibration"] = calibration
        return original(model, method, settings, selection=selection, calibration=calibration)

    monkeypatch.setattr(trainer, "prepare_model", capture)
    data = tmp_path / "toolace.json"
    data.write_text(json.dumps(TOOLACE_ROWS))
    settings = TrainSettings(
        max_steps=1,
        batch_size=2,
        corda_method="kpm",
        corda_calibration=calibration and str(ROOT / calibration),
        calibration_samples=3,
    )
    run_training(tiny_checkpoint, "toolace", data, "corda_r2", tmp_path / "run", settings)
    assert (tmp_path / "run" / "merged" / "config.json").is_file()  # a whole run, KPM or IPM
    got = seen["calibration"]
    if calibration is None:  # IPM: the task's own training examples
        assert len(got) == 6 and "labels" in got[0]
        return
    texts = [  # the shipped file's first three rows, written out by hand
        "Question: what is the chemical symbol for gold?\nAnswer: Au",
        "Question: who wrote the novel pride and prejudice?\nAnswer: Jane Austen",
        "Question: how many bones are in the adult human body?\nAnswer: 206",
    ]
    assert [e["input_ids"] for e in got] == [tiny_tokenizer(t)["input_ids"] for t in texts]


def test_paper_config_runs_corda_in_kpm_on_nq_open():
    import yaml

    from loki_pipeline.config import validate_config

    config = validate_config(yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()))
    s = TrainSettings.from_config(config, "reranker", "corda_r8")
    assert (s.corda_method, s.corda_calibration) == ("kpm", "hf:google-research-datasets/nq_open")
    assert TrainSettings.from_config(config, "reranker", "dora_r8").corda_calibration is None
