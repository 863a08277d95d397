"""Gradient checkpointing (``training.gradient_checkpointing``): less memory, the same weights.

The oracle is the same training without it: every method must end with the same trainable
tensors. Checkpointing must really be on (each layer's MLP runs twice per backward) and must not
be the reentrant kind, under which LoKI's frozen embeddings leave the trained rows without a
gradient.
"""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
import yaml
from conftest import build_tiny_model
from test_train import ROOT, positions, synthetic_examples
from test_train_resume_safety import _cli, _data, _killed_after, _merged, _settings

from loki_pipeline.cli import main
from loki_pipeline.models.architecture import get_adapter
from loki_pipeline.train import checkpoint, parse_method, resolve_settings, trainer
from loki_pipeline.train.run import run_training
from loki_pipeline.train.settings import TrainSettings
from loki_pipeline.train.trainer import (
    enable_gradient_checkpointing,
    pad_collate,
    prepare_model,
    sft_loss,
    train_model,
    validation_loss,
)

TOL = {"rtol": 1e-5, "atol": 1e-6}  # recomputation repeats the same ops; float tolerance


def _model(method: str, arch: str = "llama", **settings):
    settings = TrainSettings(learning_rate=1e-2, max_steps=4, batch_size=2, seed=7, **settings)
    model = prepare_model(
        build_tiny_model(arch),
        parse_method(method),
        settings,
        selection=positions(),
        calibration=synthetic_examples(4, seed=5),  # CorDA's
    )
    return model, settings


def _trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    return pad_collate(synthetic_examples(4, seed=seed), pad_id=0)


def _train(method: str, checkpointing: bool, arch: str = "llama", **settings):
    model, settings = _model(method, arch, **settings)
    before = _trainable(model)
    if checkpointing:
        enable_gradient_checkpointing(model)
    held = synthetic_examples(8, seed=3)[6:]
    rows = train_model(model, synthetic_examples(5), settings, progress=False, val_examples=held)
    return before, _trainable(model), rows


@pytest.mark.parametrize(
    "method,arch",
    [
        ("loki_q10", "llama"),
        ("loki_q10", "qwen2"),
        ("lora_r4", "llama"),
        ("lora_r4", "qwen2"),
        ("loki_lora_q10_r2", "llama"),
        ("full", "llama"),
        ("dora_r4", "llama"),
        ("pissa_r4", "llama"),
        ("corda_r4", "llama"),
    ],
)
def test_checkpointing_trains_the_same_weights(method, arch):
    # dropout on the PEFT adapters: the recomputed forward must draw the same masks
    before, plain, plain_rows = _train(method, False, arch, lora_dropout=0.1)
    _, checkpointed, rows = _train(method, True, arch, lora_dropout=0.1)
    assert checkpointed.keys() == plain.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], **TOL, msg=name)
    assert any(not torch.equal(plain[n], before[n]) for n in plain)  # it did train
    for a, b in zip(rows, plain_rows, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
        assert (a["val_loss"] is None) == (b["val_loss"] is None)
    assert rows[-1]["val_loss"] == pytest.approx(plain_rows[-1]["val_loss"], rel=1e-5)


def _mlp_calls(model) -> tuple[list[int], list]:
    """Count every decoder layer's MLP forward calls (hooks inside the checkpointed layer; a
    pre-hook, because the recomputation stops once it has what the backward needs)."""
    calls = [0] * get_adapter(trainer._hf_model(model)).num_layers

    def hook(i):
        def count(module, args):
            calls[i] += 1

        return count

    layers = get_adapter(trainer._hf_model(model)).layers
    return calls, [layer.mlp.register_forward_pre_hook(hook(i)) for i, layer in enumerate(layers)]


@pytest.mark.parametrize("method", ["loki_q10", "lora_r4"])
def test_checkpointing_recomputes_each_layer_in_training_only(method):
    model, settings = _model(method)
    enable_gradient_checkpointing(model)
    calls, hooks = _mlp_calls(model)
    model.train()
    loss, _ = sft_loss(model, _batch())
    assert calls == [1, 1, 1]
    loss.backward()
    assert calls == [2, 2, 2]  # each layer ran again in the backward pass
    calls[:] = [0, 0, 0]
    validation_loss(model, synthetic_examples(2), settings, pad_id=0)
    assert calls == [1, 1, 1]  # evaluation (eval mode, no gradient) is not checkpointed
    for h in hooks:
        h.remove()


def _loki_grads(model) -> list[torch.Tensor]:
    return [layer.mlp.down_proj.delta.grad for layer in get_adapter(model).layers]


def _reentrant_checkpointing(model) -> None:
    """The pitfall: the reentrant kind, without transformers' input-grad hook."""
    kwargs = {"use_reentrant": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the old name, deprecated in 5
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.disable_input_require_grads()


def test_gradients_reach_every_loki_row_through_checkpointed_layers():
    batch = _batch()
    plain, _ = _model("loki_q10")
    plain.train()
    sft_loss(plain, batch)[0].backward()
    expected = _loki_grads(plain)
    assert all(g is not None and g.abs().sum() > 0 for g in expected)

    model, _ = _model("loki_q10")
    enable_gradient_checkpointing(model)
    assert not model.model.embed_tokens.weight.requires_grad  # LoKI freezes the embeddings
    model.train()
    sft_loss(model, batch)[0].backward()
    got = _loki_grads(model)
    assert all(g is not None and g.abs().sum() > 0 for g in got)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, **TOL)

    # the check above catches the pitfall: reentrant checkpointing gives the rows nothing
    pitfall, _ = _model("loki_q10")
    _reentrant_checkpointing(pitfall)
    pitfall.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: "none of the inputs require grad"
        loss, _ = sft_loss(pitfall, batch)
    assert not loss.requires_grad
    assert all(g is None for g in _loki_grads(pitfall))


# --------------------------------------------------------------------------- settings and runs
def test_the_setting_resolves_per_method_and_is_on_for_every_paper_run():
    from loki_pipeline.config import validate_config

    assert TrainSettings().gradient_checkpointing is False
    training = {
        "gradient_checkpointing": True,
        "methods": {"full": {"gradient_checkpointing": False}},
    }
    assert resolve_settings(training, "toolace", "loki_q10").gradient_checkpointing is True
    assert resolve_settings(training, "toolace", "full").gradient_checkpointing is False
    assert resolve_settings(
        training, "toolace", "full", gradient_checkpointing=True
    ).gradient_checkpointing

    config = validate_config(yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()))
    runs = [
        (task, method)
        for tasks in config["experiments"].values()
        for task, methods in tasks.items()
        for method in methods
    ]
    kinds = {parse_method(method).kind for _, method in runs}
    assert {"loki", "loki*", "full", "lora", "dora", "pissa", "corda"} <= kinds
    for task, method in runs:
        assert TrainSettings.from_config(config, task, method).gradient_checkpointing, method


def test_checkpointing_is_not_fingerprinted_so_a_run_resumes_with_it_toggled(
    tmp_path, tiny_checkpoint, monkeypatch, caplog
):
    data = _data(tmp_path)
    enabled = []
    original = trainer.enable_gradient_checkpointing
    monkeypatch.setattr(
        trainer, "enable_gradient_checkpointing", lambda m: enabled.append(1) or original(m)
    )
    with monkeypatch.context() as patch:
        _killed_after(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            run_training(tiny_checkpoint, "toolace", data, "lora_r2", tmp_path / "run", _settings())
    assert enabled == []
    on = TrainSettings(**{**_settings().to_dict(), "gradient_checkpointing": True})
    with caplog.at_level(logging.INFO, logger=checkpoint.__name__):
        run = run_training(
            tiny_checkpoint, "toolace", data, "lora_r2", tmp_path / "run", on, progress=False
        )
    assert enabled == [1]
    assert "resumed from" in caplog.text and "starts over" not in caplog.text
    fresh = run_training(
        tiny_checkpoint, "toolace", data, "lora_r2", tmp_path / "fresh", _settings(), progress=False
    )
    got, want = _merged(run), _merged(fresh)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], **TOL, msg=name)


def test_cli_flag_turns_it_on_and_off_over_the_config(tmp_path, tiny_checkpoint, monkeypatch):
    data = _data(tmp_path)
    config = tmp_path / "train.yaml"
    config.write_text("training:\n  gradient_checkpointing: true\n")
    enabled = []
    original = trainer.enable_gradient_checkpointing
    monkeypatch.setattr(
        trainer, "enable_gradient_checkpointing", lambda m: enabled.append(1) or original(m)
    )
    assert main([*_cli(tiny_checkpoint, data, tmp_path / "a"), "--gradient-checkpointing"]) == 0
    assert enabled == [1]
    args = [*_cli(tiny_checkpoint, data, tmp_path / "b"), "--config", str(config)]
    assert main([*args, "--no-gradient-checkpointing"]) == 0
    assert enabled == [1]
    assert main([*_cli(tiny_checkpoint, data, tmp_path / "c"), "--config", str(config)]) == 0
    assert enabled == [1, 1]
