"""Small layers shared by the encoder and decoder.

MSVM-UNet is written channel-first in the official code (``Linear2d``, ``LayerNorm2d``); here
activations stay channel-last (B, H, W, C) between layers, which turns those into plain
``nn.Linear`` / ``nn.LayerNorm`` on the last dimension (same weights, same function, no permutes).
Convolutions see a (B, C, H, W) view of the same memory (channels-last strides).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv_nhwc(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """Apply a Conv2d to a channel-last (B, H, W, C) tensor; returns channel-last."""
    return conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def conv1x1_nhwc(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """A 1x1 Conv2d on a channel-last tensor is a matrix product over channels."""
    return F.linear(x, conv.weight.flatten(1), conv.bias)


def drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth per sample, scaled by 1/keep (timm's DropPath with scale_by_keep)."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class DropPath(nn.Module):
    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = float(rate)

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.rate, self.training)

    def extra_repr(self) -> str:
        return f"rate={self.rate:.4f}"


def init_vmamba_(module: nn.Module) -> None:
    """The VMamba encoder's initialisation (``VSSM._init_weights``): truncated normal (std 0.02)
    for every linear layer, zero biases, unit LayerNorms. Convolutions keep PyTorch's default."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@torch.no_grad()
def inverse_softplus(x: Tensor) -> Tensor:
    return x + torch.log(-torch.expm1(-x))
