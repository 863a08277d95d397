"""PiSSA / CorDA rewrite the base weights at initialisation; their saved ``adapter/`` must still
fit the *original* checkpoint: ``loki merge BASE run/adapter`` equals the run's ``merged/``."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from loki_pipeline.train import checkpoint, trainer
from loki_pipeline.train.merge import merge_adapter
from loki_pipeline.train.run import run_training
from loki_pipeline.train.settings import TrainSettings

ROWS = [
    {
        "system": "You can call get_weather(city).",
        "conversations": [
            {"from": "user", "value": f"Weather in city number {i}?"},
            {"from": "assistant", "value": f'[get_weather(city="C{i}")]'},
        ],
    }
    for i in range(4)
]


def _logits(model_dir) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = torch.randint(0, 384, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(ids).logits


def _train(tmp_path, checkpoint, method, out, **kw):
    data = tmp_path / "toolace.json"
    data.write_text(json.dumps(ROWS))
    settings = TrainSettings(
        learning_rate=5e-2, max_steps=2, batch_size=2, cutoff_len=128, calibration_samples=4, **kw
    )
    return run_training(checkpoint, "toolace", data, method, out, settings, progress=False)


def _assert_adapter_fits_original_base(tmp_path, checkpoint, run):
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert config["init_lora_weights"] is True  # a plain LoRA: loading it leaves the base alone
    # written sorted, not in peft's set (hash-seed) order: the same run writes the same bytes
    assert config["target_modules"] == sorted(config["target_modules"])
    assert len(config["target_modules"]) > 1
    merged = merge_adapter(checkpoint, run / "adapter", tmp_path / f"{run.name}-remerged")
    expected = _logits(run / "merged")
    assert not torch.allclose(expected, _logits(checkpoint), atol=1e-3)  # it did train
    torch.testing.assert_close(_logits(merged), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["pissa_r4", "corda_r4"])
def test_converted_adapter_merges_onto_the_original_base(tmp_path, tiny_checkpoint, method):
    run = _train(tmp_path, tiny_checkpoint, method, tmp_path / "run")
    _assert_adapter_fits_original_base(tmp_path, tiny_checkpoint, run)
    assert not (tmp_path / ".checkpoints").joinpath("run").exists()


def test_resumed_pissa_run_still_converts(tmp_path, tiny_checkpoint, monkeypatch, caplog):
    ckpt = tmp_path / ".checkpoints" / "run"
    original = trainer.train_model

    def killed_after_step_1(*args, **kwargs):
        def on_step(step, row):
            raise KeyboardInterrupt

        return original(*args, **{**kwargs, "on_step": on_step})

    monkeypatch.setattr(trainer, "train_model", killed_after_step_1)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, tiny_checkpoint, "pissa_r4", tmp_path / "run", save_every=1)
    monkeypatch.setattr(trainer, "train_model", original)
    assert (ckpt / checkpoint.CHECKPOINT_NAME / checkpoint.STATE_FILE).is_file() and not (
        tmp_path / "run"
    ).exists()
    assert (ckpt / checkpoint.INITIAL_ADAPTER / "adapter_config.json").is_file()
    with caplog.at_level(logging.INFO, logger=checkpoint.__name__):
        run = _train(tmp_path, tiny_checkpoint, "pissa_r4", tmp_path / "run", save_every=1)
    assert "at step 1" in caplog.text  # it resumed
    _assert_adapter_fits_original_base(tmp_path, tiny_checkpoint, run)


def test_peft_adapter_records_its_base_so_merge_refuses_other_weights(tmp_path, tiny_checkpoint):
    from safetensors.torch import load_file, save_file

    from loki_pipeline.errors import LokiInputError

    run = _train(tmp_path, tiny_checkpoint, "lora_r4", tmp_path / "run")
    assert (run / "adapter" / "loki_base.json").is_file()
    other = tmp_path / "other-base"
    shutil.copytree(tiny_checkpoint, other)
    weights = load_file(other / "model.safetensors")
    save_file({k: v + 0.01 for k, v in weights.items()}, other / "model.safetensors")
    with pytest.raises(LokiInputError):
        merge_adapter(other, run / "adapter", tmp_path / "wrong-merge")
    assert not (tmp_path / "wrong-merge").exists()
