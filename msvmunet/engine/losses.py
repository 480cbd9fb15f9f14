"""The official training loss: 0.4 x cross-entropy + 0.6 x soft Dice.

On CUDA (with Triton) ``DiceCELoss`` runs as two fused kernels (``msvmunet.ops.dice_ce``: one pass over
the logits for the loss, one for its gradient); elsewhere as the torch ops below, the definition."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def soft_dice_loss(logits: Tensor, target: Tensor, smooth: float = 1e-5) -> Tensor:
    """Mean over all classes (background included) of 1 - (2 sum(p t) + s) / (sum(p^2) + sum(t^2) + s).

    Sums run over the whole batch, as in the official ``binary_dice_loss``; p = softmax(logits).
    logits: (B, C, H, W); target: (B, H, W) int64.
    """
    num_classes = logits.shape[1]
    probs = torch.softmax(logits.float(), dim=1)
    # a comparison, not F.one_hot: no host synchronisation (CUDA-graph safe)
    classes = torch.arange(num_classes, device=target.device).view(1, -1, 1, 1)
    onehot = (target.unsqueeze(1) == classes).to(probs.dtype)
    dims = (0, 2, 3)
    intersect = (probs * onehot).sum(dims)
    denom = (probs * probs).sum(dims) + onehot.sum(dims)  # t^2 = t for a one-hot target
    return (1.0 - (2.0 * intersect + smooth) / (denom + smooth)).mean()


@functools.cache
def _fused_loss():
    """``dice_ce_loss_triton``, or None when Triton cannot be imported (looked up once)."""
    try:
        from ..ops.dice_ce import dice_ce_loss_triton
    except ImportError:
        return None
    return dice_ce_loss_triton


class DiceCELoss(nn.Module):
    """ce_weight * CE + dice_weight * soft Dice (official weights 0.4 / 0.6); logits (B, C, H, W),
    target (B, H, W) class indices (-100: ignored by the cross-entropy).

    ``fused``: the Triton kernels (default: for CUDA logits when Triton is installed) or the torch ops.
    """

    def __init__(self, ce_weight: float = 0.4, dice_weight: float = 0.6, fused: bool | None = None) -> None:
        super().__init__()
        self.ce_weight = ce_weight
        self.dice_weight = dice_weight
        self.fused = fused
        self._fused_fn = _fused_loss() if fused is not False else None
        if fused and self._fused_fn is None:
            raise ImportError("DiceCELoss(fused=True) needs the triton package ('pip install triton')")

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        fused = self._fused_fn is not None and (logits.is_cuda if self.fused is None else self.fused)
        if fused:
            return self._fused_fn(logits, target, self.ce_weight, self.dice_weight)
        ce = F.cross_entropy(logits.float(), target)
        return self.ce_weight * ce + self.dice_weight * soft_dice_loss(logits, target)
