"""load_model and prepare_model on local checkpoints (tiny Llama), and the prepare-model CLI."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import build_tiny_model

from loki_pipeline.cli import main as loki_main
from loki_pipeline.errors import LokiInputError
from loki_pipeline.models import load_model, prepare_model
from loki_pipeline.models.loading import SOURCE_FILE, resolve_device

IDS = torch.tensor([[5, 17, 42, 99, 3, 250]])


def logits_of(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def test_load_model_gives_the_saved_model_in_eval_mode(tiny_checkpoint):
    model, tokenizer = load_model(tiny_checkpoint)
    assert not model.training
    assert model.dtype == torch.float32
    assert tokenizer.chat_template
    # Oracle: the same tiny Llama rebuilt in memory from the same seed.
    torch.testing.assert_close(logits_of(model), logits_of(build_tiny_model("llama")))


def test_load_model_casts_to_the_requested_dtype(tiny_checkpoint):
    model, _ = load_model(tiny_checkpoint, dtype="bfloat16")
    assert model.dtype == torch.bfloat16


def test_load_model_rejects_what_is_not_a_checkpoint(tmp_path):
    with pytest.raises(LokiInputError, match="not a directory"):
        load_model(tmp_path / "missing")
    with pytest.raises(LokiInputError, match="no config.json"):
        load_model(tmp_path)


def test_architecture_is_checked_before_weights_are_read(tiny_checkpoint):
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    config["model_type"] = "gpt2"
    (tiny_checkpoint / "config.json").write_text(json.dumps(config))
    # Corrupt weights: reading them would fail differently, so the message proves the order.
    (tiny_checkpoint / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(LokiInputError, match=r"unsupported architecture 'gpt2'.*llama, qwen2"):
        load_model(tiny_checkpoint)


def test_pickle_only_checkpoint_is_refused(tiny_checkpoint):
    weights = tiny_checkpoint / "model.safetensors"
    weights.rename(tiny_checkpoint / "pytorch_model.bin")
    with pytest.raises(LokiInputError, match="safetensors only"):
        load_model(tiny_checkpoint)


def test_bad_dtype_and_device_are_refused(tiny_checkpoint):
    with pytest.raises(LokiInputError, match="dtype 'float8'"):
        load_model(tiny_checkpoint, dtype="float8")
    with pytest.raises(LokiInputError, match="device 'tpu9'"):
        load_model(tiny_checkpoint, device="tpu9")


def test_auto_device_picks_cuda_only_when_present():
    assert resolve_device("auto").startswith("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(LokiInputError, match="CUDA is not available"):
            resolve_device("cuda")


def test_prepare_local_copies_a_checkpoint_that_loads_plainly(tiny_checkpoint, tmp_path):
    from transformers import AutoModelForCausalLM

    out = prepare_model(f"local:{tiny_checkpoint}", tmp_path / "models" / "tiny")
    assert out == tmp_path / "models" / "tiny"
    record = json.loads((out / SOURCE_FILE).read_text())
    assert record["source"] == f"local:{tiny_checkpoint}"
    assert record["model_type"] == "llama"
    assert "model.safetensors" in record["files"]
    plain = AutoModelForCausalLM.from_pretrained(out)  # stock transformers, no LoKI code
    torch.testing.assert_close(logits_of(plain.eval()), logits_of(build_tiny_model("llama")))
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_prepare_rejects_bad_sources_before_writing_anything(tmp_path):
    out = tmp_path / "models" / "m"
    with pytest.raises(LokiInputError, match="unknown scheme 'ftp'"):
        prepare_model("ftp:example.org/model", out)
    with pytest.raises(LokiInputError, match="not a directory"):
        prepare_model(f"local:{tmp_path / 'nowhere'}", out)
    assert not out.exists()


@pytest.mark.parametrize("name", ["..", "."])
def test_prepare_refuses_an_output_that_is_not_a_folder_name(
    tiny_checkpoint, tmp_path, name, capsys
):
    # A model named '..' in the config would be resources/models/..: replacing it is deleting
    # resources/. The name is refused before the source is read, and nothing is touched.
    resources = tmp_path / "resources"
    (resources / "models" / "kept").mkdir(parents=True)
    (resources / "cache.txt").write_text("kept")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    out = f"{resources}/models/{name}"
    with pytest.raises(LokiInputError, match=rf"model folder name '{re.escape(name)}'"):
        prepare_model(f"local:{tiny_checkpoint}", out)
    rc = loki_main(["prepare-model", "--source", f"local:{tiny_checkpoint}", "--out", out])
    assert rc == 2 and "model folder name" in capsys.readouterr().err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_prepare_keeps_an_existing_output_when_it_fails(tiny_checkpoint, tmp_path):
    out = tmp_path / "models" / "tiny"
    prepare_model(f"local:{tiny_checkpoint}", out)
    before = sorted(p.name for p in out.iterdir())
    (tiny_checkpoint / "config.json").write_text(json.dumps({"model_type": "falcon"}))
    with pytest.raises(LokiInputError, match="falcon"):
        prepare_model(f"local:{tiny_checkpoint}", out)
    assert sorted(p.name for p in out.iterdir()) == before


def test_cli_prepare_model(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "cli-out"
    rc = loki_main(["prepare-model", "--source", f"local:{tiny_checkpoint}", "--out", str(out)])
    assert rc == 0
    assert (out / "config.json").is_file() and (out / SOURCE_FILE).is_file()
    rc = loki_main(["prepare-model", "--source", "nope:x", "--out", str(tmp_path / "x")])
    assert rc == 2
    assert "unknown scheme 'nope'" in capsys.readouterr().err


def test_hub_source_checks_the_architecture_before_downloading_weights(
    tiny_checkpoint, tmp_path, monkeypatch
):
    import huggingface_hub

    calls = []

    def fake_hf_hub_download(repo_id, filename, *, revision=None):
        calls.append(("config", repo_id, filename, revision))
        return str(tiny_checkpoint / filename)

    def fake_snapshot_download(repo_id, *, revision=None, allow_patterns=None):
        calls.append(("snapshot", repo_id, revision))
        assert "*.safetensors" in allow_patterns and "*.bin" not in allow_patterns
        return str(tiny_checkpoint)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    out = prepare_model("hf:org/tiny@v1", tmp_path / "m")
    assert calls == [("config", "org/tiny", "config.json", "v1"), ("snapshot", "org/tiny", "v1")]
    record = json.loads((out / SOURCE_FILE).read_text())
    assert record["repo_id"] == "org/tiny" and record["revision"] == "v1"

    calls.clear()
    (tiny_checkpoint / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    with pytest.raises(LokiInputError, match="hf:org/tiny: unsupported architecture 'gpt_neox'"):
        prepare_model("hf:org/tiny", tmp_path / "m2")
    assert calls == [("config", "org/tiny", "config.json", None)]  # no snapshot downloaded
