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


def _dw_conv(x: Tensor, weight: Tensor, bias: Tensor | None, flip: bool) -> Tensor:
    """The depth-wise convolution of a channel-last (B, H, W, C) map with "same" padding (cuDNN, on
    the channels-last view), the kernel turned by 180 degrees when ``flip``."""
    if flip:
        weight = weight.flip(-1, -2)
    k = weight.shape[-1]
    return F.conv2d(x.permute(0, 3, 1, 2), weight, bias, padding=k // 2, groups=weight.shape[0]).permute(0, 2, 3, 1)


class _DepthwiseConv(torch.autograd.Function):
    """A depth-wise convolution, stride 1, zero "same" padding, odd square kernel, on channel-last
    maps; the backward takes the input gradient as a forward convolution of the output gradient with
    the kernel flipped in both axes (the same map for such a convolution): cuDNN's forward kernels for
    channel-last depth-wise convolutions beat its input-gradient kernels of the same shape. Weight and
    bias gradients are cuDNN's. x, weight, bias in one dtype (``depthwise_conv_nhwc`` casts as
    autocast would)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _dw_conv(x, weight, bias, False)

    @staticmethod
    def backward(ctx, dy: Tensor):
        x, weight = ctx.saved_tensors
        pad, groups = weight.shape[-1] // 2, weight.shape[0]
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = _dw_conv(dy, weight, None, True)
        if ctx.needs_input_grad[1] or (ctx.has_bias and ctx.needs_input_grad[2]):
            _, dw, db = torch.ops.aten.convolution_backward(
                dy.permute(0, 3, 1, 2), x.permute(0, 3, 1, 2), weight, [groups] if ctx.has_bias else None, [1, 1],
                [pad, pad], [1, 1], False, [0, 0], groups,
                [False, ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]],
            )
        return dx, dw, db


def depthwise_conv_nhwc(x: Tensor, weight: Tensor, bias: Tensor | None = None,
                        flipped_dgrad: bool | None = None) -> Tensor:
    """``F.conv2d(x, weight, bias, padding=k // 2, groups=C)`` on a channel-last (B, H, W, C) tensor,
    returned channel-last; weight (C, 1, k, k) with k odd.

    ``flipped_dgrad`` (default: on CUDA) runs it as ``_DepthwiseConv`` (the input gradient as a
    forward convolution with the flipped kernel), its operands cast to autocast's dtype first under
    autocast, as autocast casts a convolution's; otherwise ``F.conv2d`` as is (on CPU its own
    input-gradient kernel is the faster one: 4.8 against 10.7 ms forward + backward at 4 x 56 x 56 x
    192, two cores)."""
    channels, _, k, k2 = weight.shape
    if k != k2 or k % 2 == 0 or weight.shape[1] != 1 or x.shape[-1] != channels:
        raise ValueError(f"depthwise_conv_nhwc: needs a (C, 1, k, k) kernel with k odd for a (..., C) input, "
                         f"got weight {tuple(weight.shape)} for input {tuple(x.shape)}")
    device = x.device.type
    if not (device == "cuda" if flipped_dgrad is None else flipped_dgrad):
        return _dw_conv(x, weight, bias, False)
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
    with torch.autocast(device, enabled=False):
        return _DepthwiseConv.apply(x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype))


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
