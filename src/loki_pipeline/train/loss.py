"""The LM head and cross-entropy of the supervised tokens, in chunks of tokens.

The plain loss materialises the logits of every supervised token, ``(tokens, vocabulary)`` in
float32, and their gradient: at Llama-3.1-8B's 128k vocabulary and 4 x 8192 supervised tokens
that is 16 GB for the logits alone, most of a step's memory. ``chunked_cross_entropy`` runs
``torch.nn.functional.linear_cross_entropy`` with ``LinearCrossEntropyOptions``: the head and
the loss over ``chunk_tokens`` tokens at a time, the input's and head's gradients computed in
the forward pass, so only one chunk's logits exist at a time. It trains the same weights as the
plain loss (to float rounding; tests/test_train_loss.py).

Where torch's chunked op would fall back to its reference path (it warns for label smoothing, a
K-dimensional head, non-int64 targets or a traced call) the loss is never called that way: the
targets are int64 class indices, no smoothing, a 2-D head. A head that is not a plain
``nn.Linear`` (a PEFT adapter on the LM head) takes the plain loss, as does a step with no
supervised token (its zero loss must still reach every parameter, as DDP expects).

Under autocast the head runs in the autocast dtype, as autocast runs the plain head, with
float32 accumulation; torch's op then returns the loss in that dtype (the logged training loss
is rounded to bfloat16, a relative 2^-9). Without gradients (the held-out loss) the chunks are
a plain loop, so the held-out loss is the plain loss's float32 value whatever the dtype.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None


def plain_cross_entropy(
    head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Mean cross-entropy of ``head(hidden)`` (float32 logits of every row at once)."""
    logits = head(hidden).float()
    if targets.numel() == 0:  # a zero loss that still reaches every parameter
        return logits.sum() * 0.0
    return F.cross_entropy(logits, targets)


def chunked_cross_entropy(
    head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, chunk_tokens: int
) -> torch.Tensor:
    """Mean cross-entropy of ``head(hidden)`` against ``targets`` (``hidden``: (n, d), the
    supervised positions only; ``targets``: (n,)), ``chunk_tokens`` rows of logits at a time.

    ``chunk_tokens`` 0 (or a head that is not a plain ``nn.Linear``, or no rows) is the plain
    loss. The value equals :func:`plain_cross_entropy`'s to float rounding, and so do the
    gradients it leaves on ``hidden`` and on the head.
    """
    if chunk_tokens <= 0 or type(head) is not nn.Linear or targets.numel() == 0:
        return plain_cross_entropy(head, hidden, targets)
    if not torch.is_grad_enabled():
        return _no_grad_chunks(head, hidden, targets, chunk_tokens)
    weight, bias = head.weight, head.bias
    low = _autocast_dtype(hidden.device)
    if low is not None:  # as autocast would run the head; the op accumulates in float32
        hidden, weight = hidden.to(low), weight.to(low)
        bias = None if bias is None else bias.to(low)
    options = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=int(chunk_tokens))
    loss = F.linear_cross_entropy(
        hidden, weight, targets.long(), linear_bias=bias, reduction="mean", options=options
    )
    return loss.float()


def _no_grad_chunks(
    head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, chunk_tokens: int
) -> torch.Tensor:
    """The plain loss, chunk by chunk (nothing to differentiate, so a simple loop)."""
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, targets.numel(), chunk_tokens):
        logits = head(hidden[start : start + chunk_tokens]).float()
        total += F.cross_entropy(logits, targets[start : start + chunk_tokens], reduction="sum")
    return total / targets.numel()
