"""``merge`` folds an adapter only into the base it was trained on (``adapter/loki_base.json``)."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from conftest import build_tiny_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from loki_pipeline.cli import main
from loki_pipeline.errors import LokiInputError
from loki_pipeline.implant import apply_loki, record_base_fingerprint, save_loki_adapter
from loki_pipeline.implant.adapter import BASE_NAME, base_fingerprint
from loki_pipeline.train.merge import merge_adapter

POSITIONS = [[0, 3], [5], [1, 31]]


def _loki_adapter(base, out):
    model = apply_loki(AutoModelForCausalLM.from_pretrained(base), POSITIONS)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.3)
    save_loki_adapter(model, out, base_model=str(base))
    return out


def _peft_adapter(base, out):
    from peft import LoraConfig, get_peft_model

    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=2, target_modules=["down_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(str(out))
    record_base_fingerprint(out, base)  # as train/run.py does for the PEFT baselines
    return out


def _other_weights(base, out):
    """The same config and tokenizer, one weight changed."""
    shutil.copytree(base, out)
    tensors = load_file(str(out / "model.safetensors"))
    name = "model.layers.1.mlp.down_proj.weight"
    tensors[name] = tensors[name].clone()
    tensors[name][5, 0] += 1.0
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


@pytest.mark.parametrize("make_adapter", [_loki_adapter, _peft_adapter], ids=["loki", "peft"])
def test_merge_refuses_a_base_with_other_weights(tmp_path, tiny_checkpoint, make_adapter):
    adapter = make_adapter(tiny_checkpoint, tmp_path / "adapter")
    record = json.loads((adapter / BASE_NAME).read_text())
    assert record == {
        "base_model": str(tiny_checkpoint),
        "base_fingerprint": base_fingerprint(tiny_checkpoint),
    }
    other = _other_weights(tiny_checkpoint, tmp_path / "other")
    with pytest.raises(LokiInputError) as info:
        merge_adapter(other, adapter, tmp_path / "wrong")
    message = str(info.value)
    assert str(tiny_checkpoint) in message and str(other) in message and "other weights" in message
    assert not (tmp_path / "wrong").exists()
    # a copy of the right base elsewhere is the same base
    copy = shutil.copytree(tiny_checkpoint, tmp_path / "copy")
    assert merge_adapter(copy, adapter, tmp_path / "merged").joinpath("config.json").is_file()


def test_merge_cli_refuses_other_base_with_exit_code_2(tmp_path, tiny_checkpoint, capsys):
    adapter = _loki_adapter(tiny_checkpoint, tmp_path / "adapter")
    other = _other_weights(tiny_checkpoint, tmp_path / "other")
    args = ["merge", "--adapter", str(adapter), "--out", str(tmp_path / "m")]
    assert main([*args, "--model", str(other)]) == 2
    assert "other weights" in capsys.readouterr().err and not (tmp_path / "m").exists()
    assert main([*args, "--model", str(tiny_checkpoint)]) == 0


def test_adapter_without_record_merges_with_a_warning(tmp_path, tiny_checkpoint, caplog):
    adapter = _loki_adapter(tiny_checkpoint, tmp_path / "adapter")
    (adapter / BASE_NAME).unlink()  # an adapter made outside the pipeline
    with caplog.at_level(logging.WARNING):
        merge_adapter(tiny_checkpoint, adapter, tmp_path / "merged")
    assert "cannot verify" in caplog.text and (tmp_path / "merged" / "config.json").is_file()


def test_no_record_when_the_base_is_not_a_checkpoint(tmp_path):
    model = apply_loki(build_tiny_model("llama"), POSITIONS)
    save_loki_adapter(model, tmp_path / "adapter", base_model="tiny")
    assert not (tmp_path / "adapter" / BASE_NAME).exists()
    with pytest.raises(LokiInputError, match="no-such-dir: not a checkpoint"):
        record_base_fingerprint(tmp_path / "adapter", tmp_path / "no-such-dir")
