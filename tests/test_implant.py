"""LoKI layer, injection, adapters, merging and suppression on tiny random models."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import build_tiny_model
from torch import nn
from transformers import AutoModelForCausalLM

from loki_pipeline.errors import LokiInputError
from loki_pipeline.implant import (
    LokiLinear,
    apply_loki,
    load_loki_adapter,
    loki_layers,
    merge_loki,
    save_loki_adapter,
    suppress_nodes,
)
from loki_pipeline.implant.suppress import suppress_checkpoint

D_MODEL, D_FF, LAYERS = 32, 48, 3


def random_positions(seed: int, k: int = 5, layers: int = LAYERS) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [sorted(torch.randperm(D_MODEL, generator=g)[:k].tolist()) for _ in range(layers)]


def batch(seed: int = 0, n: int = 2, t: int = 7) -> torch.Tensor:
    return torch.randint(0, 384, (n, t), generator=torch.Generator().manual_seed(seed))


def lm_loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, labels=ids).loss


def randomize_updates(model: nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "mistral"])
@pytest.mark.parametrize("rank", [None, 4])
def test_zero_init_wrapped_model_equals_original(arch, rank):
    plain = build_tiny_model(arch)
    wrapped = apply_loki(build_tiny_model(arch), random_positions(0), rank=rank)
    ids = batch()
    with torch.no_grad():
        torch.testing.assert_close(wrapped(ids).logits, plain(ids).logits, rtol=0, atol=0)


def test_delta_gradient_equals_weight_row_gradient_of_plain_model(tiny_model):
    positions = random_positions(1)
    plain = build_tiny_model(tiny_model.config.model_type)
    for p in plain.parameters():
        p.requires_grad_(False)
    for layer in plain.model.layers:
        layer.mlp.down_proj.weight.requires_grad_(True)
    wrapped = apply_loki(tiny_model, positions)
    ids = batch(2)
    lm_loss(plain, ids).backward()
    lm_loss(wrapped, ids).backward()
    for i, m in loki_layers(wrapped).items():
        w_grad = plain.model.layers[i].mlp.down_proj.weight.grad
        torch.testing.assert_close(m.delta.grad, w_grad[positions[i]], rtol=1e-5, atol=1e-7)


def test_lokistar_factor_gradients_follow_chain_rule():
    """dL/dA = G_S B^T and dL/dB = A^T G_S, with G_S the plain model's row gradient at W_S0 + AB."""
    positions = random_positions(2)
    wrapped = apply_loki(build_tiny_model("llama"), positions, rank=3)
    randomize_updates(wrapped)  # A != 0 so dL/dB is not trivially zero
    plain = build_tiny_model("llama")
    for p in plain.parameters():
        p.requires_grad_(False)
    layers = loki_layers(wrapped)
    with torch.no_grad():
        for i, m in layers.items():
            plain.model.layers[i].mlp.down_proj.weight[positions[i]] += m.lora_A @ m.lora_B
    for layer in plain.model.layers:
        layer.mlp.down_proj.weight.requires_grad_(True)
    ids = batch(3)
    lm_loss(plain, ids).backward()
    lm_loss(wrapped, ids).backward()
    for i, m in layers.items():
        g_s = plain.model.layers[i].mlp.down_proj.weight.grad[positions[i]]
        torch.testing.assert_close(m.lora_A.grad, g_s @ m.lora_B.T, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(m.lora_B.grad, m.lora_A.T @ g_s, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("rank", [None, 2])
def test_trainable_parameter_count_matches_formula(tiny_model, rank):
    positions = [[0, 1, 2], [5], list(range(10))]
    apply_loki(tiny_model, positions, rank=rank)
    trainable = sum(p.numel() for p in tiny_model.parameters() if p.requires_grad)
    sizes = [len(p) for p in positions]
    expected = (
        sum(k * D_FF for k in sizes) if rank is None else sum((k + D_FF) * rank for k in sizes)
    )
    assert trainable == expected


def test_optimizer_steps_change_only_selected_rows(tiny_model):
    base = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    positions = random_positions(3)
    apply_loki(tiny_model, positions)
    opt = torch.optim.AdamW([p for p in tiny_model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(3):
        opt.zero_grad()
        lm_loss(tiny_model, batch(step)).backward()
        opt.step()
    merged = merge_loki(tiny_model).state_dict()
    assert merged.keys() == base.keys()
    for name, before in base.items():
        diff = (merged[name] - before).abs()
        if name.endswith("mlp.down_proj.weight"):
            layer = int(name.split(".")[2])
            changed = diff.sum(dim=1).nonzero().flatten().tolist()
            assert changed == positions[layer], name
        else:
            assert diff.max() == 0, name


@pytest.mark.parametrize("rank", [None, 3])
def test_merge_round_trip_loads_in_stock_transformers(tmp_path, tiny_model, rank):
    positions = random_positions(4)
    apply_loki(tiny_model, positions, rank=rank)
    randomize_updates(tiny_model)
    ids = batch(5)
    with torch.no_grad():
        adapter_logits = tiny_model(ids).logits
    merged = merge_loki(tiny_model)
    assert not any(isinstance(m, LokiLinear) for m in merged.modules())
    merged.save_pretrained(tmp_path / "merged")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, adapter_logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rank", [None, 2])
def test_saved_adapter_reloads_to_same_logits_and_stores_only_rows(tmp_path, rank):
    sel = tmp_path / "sel.json"
    positions = random_positions(6)
    sel.write_text(json.dumps({"model": "tiny", "positions": positions}))
    model = apply_loki(build_tiny_model("llama"), positions, rank=rank)
    randomize_updates(model)
    save_loki_adapter(model, tmp_path / "adapter", base_model="tiny", selection=sel, q=5.0)
    config = json.loads((tmp_path / "adapter" / "loki_config.json").read_text())
    assert config["rank"] == rank and config["selection_sha256"] and config["q"] == 5.0
    from safetensors.torch import load_file

    stored = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert sum(v.numel() for k, v in stored.items() if not k.endswith("rows")) == sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )
    reloaded = load_loki_adapter(build_tiny_model("llama"), tmp_path / "adapter")
    ids = batch(7)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, rtol=0, atol=0)


def test_adapter_for_another_model_shape_is_rejected(tmp_path):
    model = apply_loki(build_tiny_model("llama"), random_positions(0))
    save_loki_adapter(model, tmp_path / "adapter")
    with pytest.raises(LokiInputError, match="another model|base model"):
        load_loki_adapter(build_tiny_model("llama", layers=4), tmp_path / "adapter")


def test_selection_for_another_model_is_rejected():
    with pytest.raises(LokiInputError, match="another model"):
        apply_loki(build_tiny_model("llama"), random_positions(0, layers=4))
    with pytest.raises(LokiInputError, match="another model"):
        apply_loki(build_tiny_model("llama"), [[0], [1], [D_MODEL]])


def test_bad_rank_is_rejected():
    with pytest.raises(LokiInputError, match="rank"):
        apply_loki(build_tiny_model("llama"), random_positions(0), rank=0)


def test_suppression_zeros_exactly_the_selected_rows(tiny_model):
    base = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    positions = random_positions(8, k=3)
    assert suppress_nodes(tiny_model, positions) == 3 * LAYERS
    for name, after in tiny_model.state_dict().items():
        if name.endswith("mlp.down_proj.weight"):
            rows = positions[int(name.split(".")[2])]
            zero_rows = (after.abs().sum(dim=1) == 0).nonzero().flatten().tolist()
            assert zero_rows == rows
            keep = [r for r in range(D_MODEL) if r not in rows]
            torch.testing.assert_close(after[keep], base[name][keep], rtol=0, atol=0)
        else:
            torch.testing.assert_close(after, base[name], rtol=0, atol=0)


def test_suppress_checkpoint_and_merge_cli(tmp_path, tiny_checkpoint):
    from loki_pipeline.cli import main

    sel = tmp_path / "sel.json"
    positions = random_positions(9, k=2)
    sel.write_text(json.dumps(positions))  # upstream plain list-of-lists format
    assert suppress_checkpoint(tiny_checkpoint, sel, tmp_path / "suppressed") == 2 * LAYERS
    out = AutoModelForCausalLM.from_pretrained(tmp_path / "suppressed")
    assert out.model.layers[1].mlp.down_proj.weight[positions[1]].abs().sum() == 0

    model = apply_loki(AutoModelForCausalLM.from_pretrained(tiny_checkpoint), positions)
    randomize_updates(model)
    save_loki_adapter(model, tmp_path / "adapter", base_model=str(tiny_checkpoint))
    rc = main(
        [
            "merge",
            "--model",
            str(tiny_checkpoint),
            "--adapter",
            str(tmp_path / "adapter"),
            "--out",
            str(tmp_path / "merged"),
        ]
    )
    assert rc == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    ids = batch(10)
    with torch.no_grad():
        torch.testing.assert_close(
            merged(ids).logits, model.eval()(ids).logits, atol=1e-5, rtol=1e-5
        )
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([[0]] * 7))
    rc = main(
        [
            "suppress",
            "--model",
            str(tiny_checkpoint),
            "--selection",
            str(bad),
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert rc == 2 and not (tmp_path / "x").exists()
