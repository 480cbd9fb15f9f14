"""Selective scan and the fused SS2D core on Triton kernels (``backend="triton"``).

Launchers, autograd Functions and the two public functions; the kernels are in
``triton_kernels.py``. State and accumulation are fp32 for fp32, bf16 and fp16 inputs; outputs are
fp32, gradients come back in each input's dtype. The backward recomputes the states inside every
block of ``block_l`` steps from a checkpoint written by the forward (B * K*D * N * L / block_l
floats), so nothing of size L is stored besides the inputs. Nothing is summed with atomics: the
reductions over channels (dB, dC) and over batch (dA, dD, d_bias) go through per-program partial
buffers summed by torch, so results are bitwise reproducible.

On a machine without CUDA the kernels run only in Triton's interpreter (``TRITON_INTERPRET=1``,
set before this module is imported), on CPU tensors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
from torch import Tensor

from .torch_chunked import ss2d_projections
from .triton_kernels import _bwd_kernel, _fwd_kernel

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@dataclass(frozen=True)
class Tuning:
    """Tile sizes, warps and the backward's register cap; ``None`` picks the default for the shape.

    Set fields to tune, e.g. ``triton_scan.tuning = Tuning(block_l=256)``. ``block_l`` is shared by
    forward and backward (it is the checkpoint stride); a tile is block_d * next_pow2(N) rows by
    block_l steps. ``bwd_maxnreg=0`` lifts the register cap.
    """

    block_l: int | None = None
    fwd_block_d: int | None = None
    bwd_block_d: int | None = None
    fwd_warps: int | None = None
    bwd_warps: int | None = None
    bwd_maxnreg: int | None = None


tuning = Tuning()


@dataclass(frozen=True)
class _Launch:
    block_n: int
    block_l: int
    fwd_block_d: int
    fwd_warps: int
    bwd_block_d: int
    bwd_warps: int
    bwd_maxnreg: int | None


def _launch_config(state: int, length: int, group_dim: int, cross: bool) -> _Launch:
    block_n = triton.next_power_of_2(state)
    dims = triton.next_power_of_2(group_dim)
    if _INTERPRET:  # the interpreter scans element by element in Python: keep tiles small
        block_l = tuning.block_l or min(16, triton.next_power_of_2(length))
        fwd_d = bwd_d = min(dims, 4)
        maxnreg = None
    else:
        # 128-step blocks, ~1024-value tiles (8 per thread with 4 warps). Channel-last (cross)
        # tiles keep >= 8 channels, so that each pixel's row is a full 32-byte sector. With N = 1
        # the backward wants ~170 registers; a cap of 168 lets 3 CTAs of 4 warps share an SM.
        block_l = tuning.block_l or max(16, min(triton.next_power_of_2(length), 128))
        fwd_d = bwd_d = min(dims, max(8 if cross else 1, 1024 // (block_l * block_n)))
        maxnreg = 168 if block_n == 1 else None
    fwd_d = tuning.fwd_block_d or fwd_d
    bwd_d = tuning.bwd_block_d or bwd_d

    def warps(block_d: int) -> int:
        return 1 if _INTERPRET else (4 if block_d * block_n * block_l <= 1024 else 8)

    if tuning.bwd_maxnreg is not None:
        maxnreg = tuning.bwd_maxnreg or None
    return _Launch(block_n, block_l, fwd_d, tuning.fwd_warps or warps(fwd_d), bwd_d,
                   tuning.bwd_warps or warps(bwd_d), maxnreg)


def _alloc(shape, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
    """Every buffer a kernel writes comes from here (tests fill it with NaN to catch gaps)."""
    return torch.empty(shape, device=device, dtype=dtype)


def _check_device(t: Tensor) -> None:
    if not t.is_cuda and not _INTERPRET:
        raise RuntimeError(
            "the triton scan backend needs CUDA tensors; on CPU use backend='torch' (or set "
            "TRITON_INTERPRET=1 before importing msvmunet to run the kernels in Triton's interpreter)"
        )


def _grouped_seq(t: Tensor, group_dim: int) -> tuple[int, int, int, int]:
    """(B, K*D, L) -> strides of (batch, group, channel, step)."""
    return t.stride(0), group_dim * t.stride(1), t.stride(1), t.stride(2)


def _grouped_state(t: Tensor) -> tuple[int, int, int, int]:
    """(B, K, N, L) -> strides of (batch, group, state, step)."""
    return t.stride(0), t.stride(1), t.stride(2), t.stride(3)


def _pixel_grouped(t: Tensor) -> tuple[int, int, int, int]:
    """(B, L, K, C) channel-last per direction -> strides of (batch, group, channel, step)."""
    return t.stride(0), t.stride(2), t.stride(3), t.stride(1)


def _pixel_shared(t: Tensor) -> tuple[int, int, int, int]:
    """(B, L, D), the same for every direction -> strides of (batch, group, channel, step)."""
    return t.stride(0), 0, t.stride(2), t.stride(1)


@dataclass(frozen=True)
class _Problem:
    """Shapes and flags of one scan, and the stride conventions of its tensors."""

    batch: int
    groups: int
    group_dim: int
    state: int
    length: int
    height: int
    width: int
    cross: bool
    softplus: bool
    launch: _Launch

    def grid(self, block_d: int) -> tuple[int, int]:
        return triton.cdiv(self.group_dim, block_d), self.batch * (1 if self.cross else self.groups)

    def seq_strides(self, t: Tensor) -> tuple[int, int, int, int]:
        """u, delta, y, du, ddelta: (B, K*D, L) plain, (B, L, K, D) / (B, L, D) cross."""
        if not self.cross:
            return _grouped_seq(t, self.group_dim)
        return _pixel_grouped(t) if t.dim() == 4 else _pixel_shared(t)

    def state_strides(self, t: Tensor) -> tuple[int, int, int, int]:
        """B, C: (B, K, N, L) plain, (B, L, K, N) cross."""
        return _pixel_grouped(t) if self.cross else _grouped_state(t)

    def partial(self, n_blocks: int, device: torch.device) -> tuple[Tensor, tuple[int, ...]]:
        """A buffer for dB or dC per channel block, and its (block, batch, group, state, step) strides."""
        if self.cross:
            buf = _alloc((n_blocks, self.batch, self.length, self.groups, self.state), device)
            return buf, (buf.stride(0), buf.stride(1), buf.stride(3), buf.stride(4), buf.stride(2))
        buf = _alloc((n_blocks, self.batch, self.groups, self.state, self.length), device)
        return buf, tuple(buf.stride())


def _forward(pb: _Problem, u, delta, A, B, C, D, bias) -> tuple[Tensor, Tensor]:
    lc = pb.launch
    device = u.device
    n_blocks = triton.cdiv(pb.length, lc.block_l)
    if pb.cross:
        y = _alloc((pb.batch, pb.length, pb.group_dim), device)
    else:
        y = _alloc((pb.batch, pb.groups * pb.group_dim, pb.length), device)
    carry = _alloc((pb.batch, pb.groups, n_blocks, pb.state, pb.group_dim), device)
    _fwd_kernel[pb.grid(lc.fwd_block_d)](
        u, delta, A, B, C, D if D is not None else A, bias if bias is not None else A, y, carry,
        pb.groups, pb.group_dim, pb.length, pb.height, pb.width,
        *pb.seq_strides(u), *pb.seq_strides(delta), *pb.state_strides(B), *pb.state_strides(C),
        *pb.seq_strides(y),
        N=pb.state, CROSS=pb.cross, SOFTPLUS=pb.softplus, HAS_D=D is not None, HAS_BIAS=bias is not None,
        BLOCK_D=lc.fwd_block_d, BLOCK_N=lc.block_n, BLOCK_L=lc.block_l, num_warps=lc.fwd_warps,
    )
    return y, carry


def _backward(pb: _Problem, dy, u, delta, A, B, C, D, bias, carry):
    """Gradients in fp32: du, ddelta, dB, dC (summed over channel blocks), dA, dD, d_bias."""
    lc = pb.launch
    device = u.device
    n_dblocks = triton.cdiv(pb.group_dim, lc.bwd_block_d)
    # du: the cross core sums the four directions into one fp32 buffer; ddelta goes out as is
    du = _alloc(u.shape, device, torch.float32 if pb.cross else u.dtype)
    ddelta = _alloc(delta.shape, device, delta.dtype)
    dB, part_strides = pb.partial(n_dblocks, device)
    dC, _ = pb.partial(n_dblocks, device)
    stats = (pb.batch, pb.groups * pb.group_dim)
    dA = _alloc(stats + (pb.state,), device)
    dD = _alloc(stats, device)
    dbias = _alloc(stats, device)
    _bwd_kernel[pb.grid(lc.bwd_block_d)](
        u, delta, A, B, C, D if D is not None else A, bias if bias is not None else A, carry, dy,
        du, ddelta, dB, dC, dA, dD, dbias,
        pb.groups, pb.group_dim, pb.length, pb.height, pb.width,
        *pb.seq_strides(u), *pb.seq_strides(delta), *pb.state_strides(B), *pb.state_strides(C),
        *pb.seq_strides(dy), *pb.seq_strides(du), *pb.seq_strides(ddelta), *part_strides,
        N=pb.state, CROSS=pb.cross, SOFTPLUS=pb.softplus, HAS_D=D is not None, HAS_BIAS=bias is not None,
        BLOCK_D=lc.bwd_block_d, BLOCK_N=lc.block_n, BLOCK_L=lc.block_l, num_warps=lc.bwd_warps,
        **({"maxnreg": lc.bwd_maxnreg} if lc.bwd_maxnreg else {}),
    )
    dB = dB[0] if n_dblocks == 1 else dB.sum(0)
    dC = dC[0] if n_dblocks == 1 else dC.sum(0)
    return du, ddelta, dB, dC, dA.sum(0), dD.sum(0), dbias.sum(0)


def _cast(grad: Tensor, like: Tensor | None) -> Tensor | None:
    return None if like is None else grad.to(like.dtype)


class _ScanFn(torch.autograd.Function):
    """y = scan(u, delta, A, B, C, D, bias) for the problem ``pb`` (plain or cross indexing)."""

    @staticmethod
    def forward(ctx, pb: _Problem, u, delta, A, B, C, D, bias):
        y, carry = _forward(pb, u, delta, A, B, C, D, bias)
        ctx.save_for_backward(u, delta, A, B, C, D, bias, carry)
        ctx.problem = pb
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        u, delta, A, B, C, D, bias, carry = ctx.saved_tensors
        du, ddelta, dB, dC, dA, dD, dbias = _backward(ctx.problem, dy, u, delta, A, B, C, D, bias, carry)
        return (None, _cast(du, u), ddelta, _cast(dA, A), _cast(dB, B), _cast(dC, C), _cast(dD, D),
                _cast(dbias, bias))


def _contiguous(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.contiguous()


def selective_scan_triton(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = True,
) -> Tensor:
    """u, delta: (B, K*D, L); A: (K*D, N); B, C: (B, K, N, L); D, delta_bias: (K*D,) -> y (B, K*D, L) fp32.

    Any strides; contiguous steps (stride 1 along L) give coalesced loads.
    """
    _check_device(u)
    batch, channels, length = u.shape
    groups, state = B.shape[1], A.shape[1]
    launch = _launch_config(state, length, channels // groups, cross=False)
    pb = _Problem(batch, groups, channels // groups, state, length, 1, 1, False, bool(delta_softplus), launch)
    return _ScanFn.apply(pb, u, delta, A.contiguous(), B, C, _contiguous(D), _contiguous(delta_bias))


def ss2d_scan_triton(
    x: Tensor,
    x_proj_weight: Tensor,
    dt_projs_weight: Tensor,
    dt_projs_bias: Tensor,
    A_logs: Tensor,
    Ds: Tensor,
) -> Tensor:
    """The fused SS2D core. x: (B, H, W, D) channel-last -> y: (B, H, W, D) fp32.

    x_proj_weight: (4, R + 2N, D); dt_projs_weight: (4, D, R); dt_projs_bias: (4, D);
    A_logs: (4*D, N); Ds: (4*D,). The projections are per pixel, so they run once in pixel order
    for the four directions (torch matmuls); the scan kernel reads every direction's order itself
    and writes the sum of the four, with no reordered copies in or out.
    """
    _check_device(x)
    batch, height, width, dim = x.shape
    if x_proj_weight.shape[0] != 4:
        raise ValueError(f"x_proj_weight must hold 4 directions, got shape {tuple(x_proj_weight.shape)}")
    flat, dts, Bs, Cs = ss2d_projections(x.contiguous(), x_proj_weight, dt_projs_weight)
    if dts.stride(-1) != 1:
        dts = dts.contiguous()
    state, length = A_logs.shape[1], height * width
    launch = _launch_config(state, length, dim, cross=True)
    pb = _Problem(batch, 4, dim, state, length, height, width, True, True, launch)
    A = -torch.exp(A_logs.float())
    y = _ScanFn.apply(pb, flat, dts, A, Bs, Cs, Ds.contiguous(), dt_projs_bias.reshape(-1).contiguous())
    return y.view(batch, height, width, dim)


__all__ = ["Tuning", "selective_scan_triton", "ss2d_scan_triton", "tuning"]
