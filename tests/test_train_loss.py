"""The chunked loss (``training.loss_chunk_tokens``): the plain loss's value, gradients and
trained weights, without holding every supervised token's logits.

Oracles: ``F.cross_entropy(F.linear(...))`` for one call (the reference torch's own docs give
for ``linear_cross_entropy``), and the same training with ``loss_chunk_tokens: 0`` (the plain
loss, every logit at once) for the trained weights.

Tolerance: the chunked op sums the same float32 terms in another order (its logsumexp, its
per-chunk weight-gradient matmuls), so values differ by float32 rounding, ~1e-7 relative per
sum; four AdamW steps divide each gradient by its own running RMS, which keeps such relative
differences relative. rtol 1e-5 / atol 1e-6 is the tolerance the other "same weights" tests of
the loop use (gradient checkpointing, 2 processes) and 100x that rounding; a wrong chunk (a
token dropped, counted twice, or a mean over the chunk instead of over all tokens) moves the
weights by >1e-3 (checked by ``test_a_wrong_mean_would_be_caught``).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import build_tiny_model
from test_train import positions, synthetic_examples
from torch.nn import functional as F

from loki_pipeline.errors import LokiInputError
from loki_pipeline.train import parse_method
from loki_pipeline.train.loss import chunked_cross_entropy
from loki_pipeline.train.settings import TrainSettings
from loki_pipeline.train.trainer import (
    enable_gradient_checkpointing,
    pad_collate,
    prepare_model,
    sft_loss,
    train_model,
)

TOL = {"rtol": 1e-5, "atol": 1e-6}
#: 5 does not divide the batches' supervised token counts (e.g. 18 = 3 x 5 + 3)
CHUNK = 5


def _oracle(hidden, weight, bias, targets):
    return F.cross_entropy(F.linear(hidden, weight, bias), targets)


@pytest.mark.parametrize("chunk", [1, CHUNK, 37, 64, 1000])
@pytest.mark.parametrize("bias", [False, True])
def test_value_and_gradients_equal_the_reference(chunk, bias):
    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=bias)
    hidden = torch.randn(37, 16, generator=g, requires_grad=True)
    targets = torch.randint(0, 50, (37,), generator=g)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's fallback to its reference path warns
        loss = chunked_cross_entropy(head, hidden, targets, chunk)
    loss.backward()
    got = [hidden.grad.clone(), head.weight.grad.clone()]
    got += [head.bias.grad.clone()] if bias else []
    hidden.grad = None
    head.zero_grad()
    want = _oracle(hidden, head.weight, head.bias, targets)
    want.backward()
    ref = [hidden.grad, head.weight.grad] + ([head.bias.grad] if bias else [])
    torch.testing.assert_close(loss, want, **TOL)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, **TOL)


def test_no_gradient_and_no_tokens_take_exact_paths():
    head = torch.nn.Linear(8, 30)
    hidden = torch.randn(11, 8)
    targets = torch.randint(0, 30, (11,))
    with torch.no_grad():  # the held-out loss: the plain loss's float32 value
        torch.testing.assert_close(
            chunked_cross_entropy(head, hidden, targets, 4), _oracle(hidden, head.weight,
                                                                     head.bias, targets))  # fmt: skip
    empty = chunked_cross_entropy(head, hidden[:0], targets[:0], 4)
    empty.backward()  # a zero loss that still reaches the head, as DDP expects
    assert float(empty.detach()) == 0.0 and head.weight.grad is not None


def test_under_bfloat16_autocast_it_matches_the_autocast_head():
    g = torch.Generator().manual_seed(1)
    head = torch.nn.Linear(32, 200, bias=False)
    hidden = torch.randn(60, 32, generator=g)
    targets = torch.randint(0, 200, (60,), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = chunked_cross_entropy(head, hidden, targets, 16)
        want = F.cross_entropy(head(hidden).float(), targets)
    assert got.dtype == torch.float32
    # bfloat16 logits (8-bit mantissa) either way; the chunked loss is rounded to bfloat16
    torch.testing.assert_close(got, want, rtol=2**-7, atol=0)


def _train(method: str, chunk: int, checkpointing: bool = False, **extra):
    settings = TrainSettings(learning_rate=1e-2, max_steps=4, batch_size=3, seed=7,
                             loss_chunk_tokens=chunk, **extra)  # fmt: skip
    model = prepare_model(build_tiny_model("llama"), parse_method(method), settings,
                          selection=positions())  # fmt: skip
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    if checkpointing:
        enable_gradient_checkpointing(model)
    # lengths 6-9 in batches of 3: padding; the first 3 labels of each are -100 (prompt)
    held = synthetic_examples(8, seed=3)[5:]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="linear_cross_entropy")
        rows = train_model(model, synthetic_examples(7), settings, progress=False,
                           val_examples=held)  # fmt: skip
    after = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return before, after, rows


@pytest.mark.parametrize("method", ["loki_q10", "loki_lora_q10_r2", "lora_r4", "full"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_chunked_loss_trains_the_weights_of_the_plain_loss(method, checkpointing):
    before, plain, plain_rows = _train(method, 0)
    _, chunked, rows = _train(method, CHUNK, checkpointing)
    assert chunked.keys() == plain.keys()
    for name in plain:
        torch.testing.assert_close(chunked[name], plain[name], **TOL, msg=name)
    assert any(not torch.equal(plain[n], before[n]) for n in plain)  # it did train
    for a, b in zip(rows, plain_rows, strict=True):
        assert a["tokens"] == b["tokens"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
    assert rows[-1]["val_loss"] == pytest.approx(plain_rows[-1]["val_loss"], rel=1e-6)


def test_a_wrong_mean_would_be_caught(monkeypatch):
    """The tolerance is tight enough: a loss averaged per chunk (a classic chunking bug) moves
    the trained weights far beyond it."""
    _, plain, _ = _train("full", 0)

    def per_chunk_mean(head, hidden, targets, chunk_tokens):
        parts = [F.cross_entropy(head(h).float(), t)
                 for h, t in zip(hidden.split(chunk_tokens), targets.split(chunk_tokens),
                                 strict=True)]  # fmt: skip
        return torch.stack(parts).mean()

    import loki_pipeline.train.trainer as trainer

    monkeypatch.setattr(trainer, "chunked_cross_entropy", per_chunk_mean)
    _, wrong, _ = _train("full", CHUNK)
    worst = max(float((wrong[n] - plain[n]).abs().max()) for n in plain)
    assert worst > 1e-3


def test_sft_loss_runs_torchs_chunked_op_with_the_chunk_size(monkeypatch):
    """Torch's chunked op runs (not its reference path) with ``batch_chunk_size`` = the
    setting, on the supervised tokens only."""
    import torch.nn.modules.linear_cross_entropy as lce

    calls = []
    op = lce._linear_cross_entropy_batch_chunked

    def spy(input, weight, target, *args):
        calls.append((input.shape[0], args[5]))  # rows, batch_chunk_size
        return op(input, weight, target, *args)

    monkeypatch.setattr(lce, "_linear_cross_entropy_batch_chunked", spy)
    model = build_tiny_model("llama")
    batch = pad_collate(synthetic_examples(4), pad_id=0)
    loss, n = sft_loss(model, batch, CHUNK)
    assert calls == [(n, CHUNK)] and n == int((batch["labels"][:, 1:] != -100).sum())
    loss.backward()
    want, _ = sft_loss(model, batch, 0)
    assert len(calls) == 1  # 0: the plain loss
    torch.testing.assert_close(loss, want, **TOL)


def test_the_setting_validates_and_the_flag_overrides_the_config():
    assert TrainSettings().loss_chunk_tokens > 0  # on by default
    with pytest.raises(LokiInputError, match="loss_chunk_tokens"):
        TrainSettings(loss_chunk_tokens=-1).validate()
    import argparse

    from loki_pipeline.cli.train import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--model", "m", "--task", "toolace", "--method", "full", "--out",
                              "o", "--loss-chunk-tokens", "0"])  # fmt: skip
    config = {"training": {"loss_chunk_tokens": 512}}
    assert TrainSettings.from_cli(args, config).loss_chunk_tokens == 0
    args.loss_chunk_tokens = None
    assert TrainSettings.from_cli(args, config).loss_chunk_tokens == 512
