"""The LoKI layer: a frozen ``down_proj`` plus a trainable update of its selected rows only.

In the LoKI paper ``W_down`` is split row-wise into the selected rows ``W_S`` (trainable)
and the rest (frozen). Instead of unfreezing the weight we keep it frozen and learn an additive
update of the selected rows,

    y = x W^T,   y[..., S] += x Delta^T          (LoKI,  Delta in R^{|S| x d_ff}, zero-init)
                 Delta = A B                      (LoKI*, A in R^{|S| x r} zero-init, B in R^{r x d_ff})

so the wrapped layer computes exactly the original function until training moves ``Delta``,
and ``dL/dDelta == dL/dW[S]`` of the plain model (the update enters ``y`` the same way the rows
do). ``merge()`` folds ``W[S] += Delta`` into a plain ``nn.Linear``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from loki_pipeline.errors import LokiInputError


class LokiLinear(nn.Module):
    """PEFT-style wrapper of an ``nn.Linear``: frozen ``base``, trainable rows ``rows``.

    ``rows`` are output coordinates (knowledge output nodes) of the base layer, stored sorted
    as a ``long`` buffer so they travel with ``.to(device)`` and ``state_dict``.
    """

    def __init__(
        self, base: nn.Linear, rows: Sequence[int] | torch.Tensor, rank: int | None = None
    ):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise LokiInputError(f"LokiLinear wraps nn.Linear, got {type(base).__name__}")
        idx = torch.as_tensor(list(rows) if not torch.is_tensor(rows) else rows, dtype=torch.long)
        idx = idx.flatten().unique(sorted=True)
        out_features, in_features = base.weight.shape
        if idx.numel() and (int(idx[0]) < 0 or int(idx[-1]) >= out_features):
            raise LokiInputError(
                f"row index out of range for a down_proj with {out_features} output nodes: "
                f"min {int(idx[0])}, max {int(idx[-1])}"
            )
        if rank is not None and rank < 1:
            raise LokiInputError(f"LoKI* rank must be a positive integer, got {rank}")
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)
        self.base = base
        self.rank = rank
        self.register_buffer("rows", idx.to(base.weight.device), persistent=True)
        k = idx.numel()
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        if rank is None:
            self.delta = nn.Parameter(torch.zeros(k, in_features, **factory))
        else:
            # LoRA's convention with the roles fixed by the paper: A zero-initialised, so
            # A @ B == 0 at the start; B random so that A receives a gradient at step one.
            self.lora_A = nn.Parameter(torch.zeros(k, rank, **factory))
            self.lora_B = nn.Parameter(torch.empty(rank, in_features, **factory))
            nn.init.kaiming_uniform_(self.lora_B, a=math.sqrt(5))

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:  # modules that peek at ``down_proj.weight`` keep working
        return self.base.weight

    @property
    def num_rows(self) -> int:
        return int(self.rows.numel())

    def delta_weight(self) -> torch.Tensor:
        """The update of the selected rows, ``[|S|, d_ff]``."""
        if self.rank is None:
            return self.delta
        return self.lora_A @ self.lora_B

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.base.weight, self.base.bias)
        if self.num_rows == 0:
            return out
        if self.rank is None:
            upd = F.linear(x, self.delta)  # [..., |S|]: only the selected rows, never x @ W^T again
        else:
            upd = F.linear(F.linear(x, self.lora_B), self.lora_A)
        # In place on the matmul's fresh output: the linear's backward needs x and W, not `out`.
        return out.index_add_(-1, self.rows, upd.to(out.dtype))

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """Fold the update into the base weight (``W[S] += Delta``) and return the plain layer."""
        if self.num_rows:
            w = self.base.weight
            w.index_add_(0, self.rows, self.delta_weight().to(w.dtype))
        return self.base

    def extra_repr(self) -> str:
        kind = "LoKI" if self.rank is None else f"LoKI* r={self.rank}"
        return f"{kind}, rows={self.num_rows}/{self.out_features}, d_ff={self.in_features}"
