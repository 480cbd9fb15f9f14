"""The training loss (weighted cross-entropy + soft Dice over softmax probabilities) on two Triton
kernels: one pass over the logits for the loss, one for its gradient.

Forward: each program takes a block of pixels, computes the softmax over the classes in fp32 and
writes its partial sums: the cross-entropy of its pixels, how many are not ignored, and per class
sum(p t), sum(p^2), sum(t) (t the one-hot target). The partial sums are added in a fixed order by
torch (bitwise reproducible, no atomics), and the loss is computed from the totals in traced Python.
Backward: with the totals known, the gradient at a pixel depends on that pixel only,

    dL/dz = w_ce (p - t) / n_valid + p * (g - <p, g>),   g_c = a_c t_c + b_c p_c,

(a_c, b_c from the Dice totals), so a second pass recomputes the softmax and writes dL/dz in the
logits' dtype and layout. Compared with the loss as torch ops, which torch.compile turns into several
reductions over the (B, C, H, W) logits, this reads them twice and writes their gradient once.

Semantics as ``F.cross_entropy(logits.float(), target)`` (mean over targets not equal to -100) and
``soft_dice_loss``. A target outside [0, C) other than -100 makes the loss NaN (``F.cross_entropy``
raises instead; this keeps the step free of host synchronisation, e.g. inside a CUDA graph).

On a machine without CUDA the kernels run only in Triton's interpreter (``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

IGNORE_INDEX = -100
_IGNORE = tl.constexpr(IGNORE_INDEX)
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
_BLOCK = 128  # pixels per program, 8 warps: 8 logits per thread for up to 16 classes (80-82 registers for sm_90)
_WARPS = 8


@triton.jit
def _softmax_tile(x_ptr, t_ptr, pid, n_pix, hw, width, sx_b, sx_c, sx_h, sx_w,
                  C: tl.constexpr, CP: tl.constexpr, BLOCK: tl.constexpr):
    """A block of pixels: logits (fp32, -inf in the padded classes), p = softmax, the targets, the
    one-hot targets and the masks, and the pixels' element offsets."""
    pix = pid * BLOCK + tl.arange(0, BLOCK)
    in_pix = pix < n_pix
    pix64 = pix.to(tl.int64)
    b = pix64 // hw
    rest = pix64 % hw
    offs = b * sx_b + (rest // width) * sx_h + (rest % width) * sx_w
    cls = tl.arange(0, CP)
    in_cls = cls < C
    mask = in_pix[:, None] & in_cls[None, :]
    ptrs = offs[:, None] + cls[None, :].to(tl.int64) * sx_c
    x = tl.load(x_ptr + ptrs, mask=mask, other=0.0).to(tl.float32)
    x = tl.where(in_cls[None, :], x, float("-inf"))  # padded classes drop out of the softmax
    xmax = tl.max(x, 1)
    e = tl.exp(x - xmax[:, None])
    total = tl.sum(e, 1)
    p = tl.where(mask, e / total[:, None], 0.0)
    t = tl.load(t_ptr + pix64, mask=in_pix, other=_IGNORE)
    onehot = (cls[None, :].to(tl.int64) == t[:, None]) & mask
    return x, xmax, total, p, t, onehot, in_pix, mask, ptrs


@triton.jit
def _dice_ce_stats_kernel(x_ptr, t_ptr, part_ptr, n_pix, hw, width, sx_b, sx_c, sx_h, sx_w,
                          C: tl.constexpr, CP: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    x, xmax, total, p, t, onehot, in_pix, mask, _ = _softmax_tile(
        x_ptr, t_ptr, pid, n_pix, hw, width, sx_b, sx_c, sx_h, sx_w, C, CP, BLOCK)
    counted = in_pix & (t != _IGNORE)
    x_t = tl.sum(tl.where(onehot, x, 0.0), 1)
    ce = xmax + tl.log(total) - x_t
    ce = tl.where((t >= 0) & (t < C), ce, float("nan"))  # a target no class matches
    t_f = onehot.to(tl.float32)
    cls = tl.arange(0, CP)
    row = part_ptr + pid * (3 * CP + 2)
    tl.store(row + cls, tl.sum(p * t_f, 0))
    tl.store(row + CP + cls, tl.sum(p * p, 0))
    tl.store(row + 2 * CP + cls, tl.sum(t_f, 0))
    tl.store(row + 3 * CP, tl.sum(tl.where(counted, ce, 0.0), 0))
    tl.store(row + 3 * CP + 1, tl.sum(counted.to(tl.float32), 0))


@triton.jit
def _dice_ce_grad_kernel(x_ptr, t_ptr, coef_ptr, dx_ptr, n_pix, hw, width, sx_b, sx_c, sx_h, sx_w,
                         C: tl.constexpr, CP: tl.constexpr, BLOCK: tl.constexpr):
    """dx has x's strides."""
    pid = tl.program_id(0)
    x, xmax, total, p, t, onehot, in_pix, mask, ptrs = _softmax_tile(
        x_ptr, t_ptr, pid, n_pix, hw, width, sx_b, sx_c, sx_h, sx_w, C, CP, BLOCK)
    cls = tl.arange(0, CP)
    a = tl.load(coef_ptr + cls)  # Dice: g_c = a_c t_c + b_c p_c
    b = tl.load(coef_ptr + CP + cls)
    ce_scale = tl.load(coef_ptr + 2 * CP)  # grad * w_ce / n_valid
    t_f = onehot.to(tl.float32)
    g = a[None, :] * t_f + b[None, :] * p
    dz = p * (g - tl.sum(p * g, 1)[:, None])
    dz += tl.where((t != _IGNORE)[:, None], ce_scale * (p - t_f), 0.0)
    tl.store(dx_ptr + ptrs, dz.to(dx_ptr.dtype.element_ty), mask=mask)


def _check(logits: Tensor, target: Tensor) -> None:
    if not logits.is_cuda and not _INTERPRET:
        raise RuntimeError("the fused Dice + CE loss needs CUDA tensors (or TRITON_INTERPRET=1 on CPU)")
    if logits.dim() != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"logits must be (B, C, H, W) and target (B, H, W); got {tuple(logits.shape)} and "
                         f"{tuple(target.shape)}")


def _launch_args(logits: Tensor) -> tuple[int, int, int, int, int]:
    batch, classes, height, width = logits.shape
    return batch * height * width, height * width, width, classes, triton.next_power_of_2(classes)


@torch.library.custom_op("msvmunet::dice_ce_stats", mutates_args=())
def dice_ce_stats(logits: Tensor, target: Tensor) -> Tensor:
    """Per-program partial sums (programs, 3 * CP + 2): sum(p t), sum(p^2), sum(t) per class (CP = C
    rounded up to a power of two), then the cross-entropy summed over counted pixels and their count."""
    n_pix, hw, width, classes, cp = _launch_args(logits)
    programs = triton.cdiv(n_pix, _BLOCK)
    parts = torch.empty(programs, 3 * cp + 2, device=logits.device, dtype=torch.float32)
    _dice_ce_stats_kernel[(programs,)](logits, target, parts, n_pix, hw, width, *logits.stride(),
                                       C=classes, CP=cp, BLOCK=_BLOCK, num_warps=_WARPS)
    return parts


@dice_ce_stats.register_fake
def _(logits, target):
    n_pix, _, _, _, cp = _launch_args(logits)
    return logits.new_empty(triton.cdiv(n_pix, _BLOCK), 3 * cp + 2, dtype=torch.float32)


@torch.library.custom_op("msvmunet::dice_ce_grad", mutates_args=())
def dice_ce_grad(logits: Tensor, target: Tensor, coef: Tensor) -> Tensor:
    """dL/dlogits in the logits' dtype and strides (dense logits); coef: (2 * CP + 1,) = a, b (Dice), w_ce * grad / n."""
    n_pix, hw, width, classes, cp = _launch_args(logits)
    grad = torch.empty_strided(logits.shape, logits.stride(), dtype=logits.dtype, device=logits.device)
    _dice_ce_grad_kernel[(triton.cdiv(n_pix, _BLOCK),)](
        logits, target, coef, grad, n_pix, hw, width, *logits.stride(), C=classes, CP=cp, BLOCK=_BLOCK, num_warps=_WARPS)
    return grad


@dice_ce_grad.register_fake
def _(logits, target, coef):
    return torch.empty_strided(logits.shape, logits.stride(), dtype=logits.dtype, device=logits.device)


class _DiceCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, ce_weight: float, dice_weight: float, smooth: float) -> Tensor:
        classes, cp = logits.shape[1], triton.next_power_of_2(logits.shape[1])
        totals = dice_ce_stats(logits, target).sum(0)
        inter, psq, count = totals[:classes], totals[cp:cp + classes], totals[2 * cp:2 * cp + classes]
        ce = totals[3 * cp] / totals[3 * cp + 1]
        denom = psq + count + smooth
        dice = (1.0 - (2.0 * inter + smooth) / denom).mean()
        ctx.save_for_backward(logits, target, inter, denom, totals[3 * cp + 1])
        ctx.weights = (ce_weight, dice_weight, smooth)
        return ce_weight * ce + dice_weight * dice

    @staticmethod
    def backward(ctx, grad: Tensor):
        logits, target, inter, denom, counted = ctx.saved_tensors
        ce_weight, dice_weight, smooth = ctx.weights
        classes, cp = logits.shape[1], triton.next_power_of_2(logits.shape[1])
        # d/dp_c of dice_weight * mean_c [1 - (2 I_c + s) / D_c] = a_c t_c + b_c p_c
        scale = grad * dice_weight / classes
        coef = torch.zeros(2 * cp + 1, device=logits.device, dtype=torch.float32)
        coef[:classes] = -2.0 * scale / denom
        coef[cp:cp + classes] = 2.0 * scale * (2.0 * inter + smooth) / denom.square()
        coef[2 * cp] = grad * ce_weight / counted
        return dice_ce_grad(logits, target, coef), None, None, None, None


def dice_ce_loss_triton(logits: Tensor, target: Tensor, ce_weight: float = 0.4, dice_weight: float = 0.6,
                        smooth: float = 1e-5) -> Tensor:
    """ce_weight * CE + dice_weight * soft Dice of (B, C, H, W) logits (any strides, any float dtype)
    against (B, H, W) integer targets, as a float32 scalar."""
    _check(logits, target)
    if not (logits.is_contiguous() or logits.is_contiguous(memory_format=torch.channels_last)):
        logits = logits.contiguous()  # dense, so that the gradient can take the logits' strides
    return _DiceCE.apply(logits, target.contiguous().long(), ce_weight, dice_weight, smooth)


__all__ = ["IGNORE_INDEX", "dice_ce_loss_triton"]
