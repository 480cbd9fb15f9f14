"""Selective scan in plain PyTorch: the CPU path and the GPU fallback.

The recurrence h_t = a_t * h_{t-1} + b_t (a_t = exp(delta_t * A) in (0, 1]) is evaluated in
chunks: a short sequential pass inside every chunk (vectorised over all chunks and channels),
then the same recurrence over the chunk ends (recursively), then one fused correction
h_t += (a_1 ... a_t within the chunk) * carry. Only products of factors a_t <= 1 are formed, so
nothing is ever divided by a decaying product or exponentiated from a positive sum: unlike the
``exp(cumsum)`` formulation it cannot overflow, for any |A| * sum(delta). Accumulation is float32
(float64 inputs stay float64, for gradcheck). The backward pass is the same scan run in reverse.

The chunk size and the depth of the recursion depend on the length, which a graph exporter would
bake in; while ``torch.export`` traces (the ONNX export) the recurrence is one ``scan`` operator
instead (``linear_scan_exported``), the same for every length.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cross_scan import scan_orders

_is_exporting = getattr(torch.compiler, "is_exporting", lambda: False)  # older torch has no such flag


def _chunk_for(length: int) -> int:
    # About sqrt(L) steps per level keeps the Python loop short and the tensors per step large.
    return max(8, min(64, math.isqrt(max(length, 1))))


def _scan(a: Tensor, b: Tensor, chunk: int) -> Tensor:
    """h[t] = a[t] * h[t-1] + b[t] along dim 0 of (L, M) tensors, h[-1] = 0."""
    length = a.shape[0]
    if length <= chunk:
        h = torch.empty_like(b)
        h[0] = b[0]
        for t in range(1, length):
            torch.addcmul(b[t], a[t], h[t - 1], out=h[t])
        return h
    n = -(-length // chunk)
    pad = n * chunk - length
    if pad:  # a = 1, b = 0 after the end changes nothing before it
        a = torch.cat([a, a.new_ones(pad, a.shape[1])])
        b = torch.cat([b, b.new_zeros(pad, b.shape[1])])
    a = a.reshape(n, chunk, -1)
    b = b.reshape(n, chunk, -1)
    h = torch.empty_like(b)
    h[:, 0] = b[:, 0]
    for t in range(1, chunk):
        torch.addcmul(b[:, t], a[:, t], h[:, t - 1], out=h[:, t])
    decay = torch.cumprod(a, dim=1)
    carry = _scan(decay[:, -1], h[:, -1], chunk)  # the state at the end of every chunk
    h[1:].addcmul_(decay[1:], carry[:-1].unsqueeze(1))
    h = h.view(n * chunk, -1)
    return h[:length] if pad else h


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, chunk: int) -> Tensor:
        h = _scan(a, b, chunk)
        ctx.save_for_backward(a, h)
        ctx.chunk = chunk
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h: Tensor):
        a, h = ctx.saved_tensors
        # g[t] = grad_h[t] + a[t+1] * g[t+1]: the same recurrence, backwards in time.
        a_next = torch.cat([a[1:], a.new_zeros(1, a.shape[1])])
        g = _scan(a_next.flip(0), grad_h.flip(0), ctx.chunk).flip(0)
        grad_a = torch.zeros_like(a)
        torch.mul(g[1:], h[:-1], out=grad_a[1:])
        return grad_a, g, None


def linear_scan(a: Tensor, b: Tensor, chunk: int | None = None) -> Tensor:
    """h[t] = a[t] * h[t-1] + b[t] along dim 0 of (L, M) tensors (h[-1] = 0), differentiable."""
    if _is_exporting():
        return linear_scan_exported(a, b)
    chunk = chunk or _chunk_for(a.shape[0])
    return _LinearScan.apply(a.contiguous(), b.contiguous(), chunk)


def linear_scan_exported(a: Tensor, b: Tensor) -> Tensor:
    """``linear_scan`` (forward only) as one ``scan`` operator, which ``torch.export`` keeps whole and the ONNX
    exporter writes as an ONNX ``Scan``: the same graph for every length. a, b: (L, M) -> h: (L, M)."""
    from torch._higher_order_ops.scan import scan

    def step(h: Tensor, ab: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h = torch.addcmul(ab[1], ab[0], h)
        return h, h.clone()  # the scan's carry and its output must not share memory

    return scan(step, torch.zeros_like(b[0]), (a, b))[1]


def selective_scan_time_major(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
) -> Tensor:
    """The scan on time-major tensors, the layout the chunked loop wants.

    u, delta: (L, B, K, D); A: (K, D, N); B, C: (L, B, K, N); D, delta_bias: (K, D) -> y (L, B, K, D).
    """
    acc = torch.promote_types(u.dtype, torch.float32)
    u, delta, B, C, A = (t.to(acc) for t in (u, delta, B, C, A))
    if delta_bias is not None:
        delta = delta + delta_bias.to(acc)
    if delta_softplus:
        delta = F.softplus(delta)
    decay = torch.exp(delta.unsqueeze(-1) * A)  # (L, B, K, D, N), in (0, 1] for A < 0
    drive = (delta * u).unsqueeze(-1) * B.unsqueeze(3)  # (L, B, K, D, N)
    length = u.shape[0]
    h = linear_scan(decay.reshape(length, -1), drive.reshape(length, -1)).view(decay.shape)
    if h.shape[-1] == 1:
        y = h.squeeze(-1) * C.squeeze(-1).unsqueeze(3)
    else:
        y = (h * C.unsqueeze(3)).sum(-1)
    if D is not None:
        y = y + D.to(acc) * u
    return y


def selective_scan_torch(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = True,
) -> Tensor:
    """Official layouts: u, delta (B, K*D, L); A (K*D, N); B, C (B, K, N, L) -> y (B, K*D, L), float32."""
    batch, channels, length = u.shape
    groups, state = B.shape[1], A.shape[1]
    per_group = channels // groups

    def time_major(t: Tensor) -> Tensor:
        return t.view(batch, groups, per_group, length).permute(3, 0, 1, 2)

    y = selective_scan_time_major(
        time_major(u),
        time_major(delta),
        A.view(groups, per_group, state),
        B.permute(3, 0, 1, 2),
        C.permute(3, 0, 1, 2),
        None if D is None else D.view(groups, per_group),
        None if delta_bias is None else delta_bias.view(groups, per_group),
        delta_softplus,
    )
    return y.permute(1, 2, 3, 0).reshape(batch, channels, length)


def ss2d_output(y: Tensor, x: Tensor) -> Tensor:
    """The SS2D core's y (summed over the directions in fp32 or float64) as it is returned: in x's
    dtype when that is 16-bit (the official kernel returns each direction's y in it; here the sum
    is rounded once), else as it is."""
    return y.to(x.dtype) if x.dtype in (torch.float16, torch.bfloat16) else y


def ss2d_projections(
    x: Tensor, x_proj_weight: Tensor, dt_projs_weight: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The per-pixel projections of SS2D, once in pixel order for all four directions.

    x: (B, H, W, D) -> x as (B, L, D), dt (B, L, 4, D), B and C (B, L, 4, N) (strided views).
    Two matrix products: x against the x-projection rows grouped by kind (the dt inputs of the
    four directions, then their B, then their C), and the dt inputs against the block-diagonal
    dt projection (4D x 4R), instead of a batched product over a size-R inner dimension.
    """
    batch, height, width, dim = x.shape
    length = height * width
    groups, proj, _ = x_proj_weight.shape
    rank = dt_projs_weight.shape[2]
    state = (proj - rank) // 2
    flat = x.reshape(batch, length, dim)
    weight = torch.cat([w.reshape(-1, dim) for w in x_proj_weight.split([rank, state, state], dim=1)])
    x_dbl = F.linear(flat, weight)  # (B, L, 4R + 4N + 4N)
    dt_in, Bs, Cs = x_dbl.split([groups * rank, groups * state, groups * state], dim=-1)
    dts = F.linear(dt_in, torch.block_diag(*dt_projs_weight)).view(batch, length, groups, dim)
    return flat, dts, Bs.unflatten(-1, (groups, state)), Cs.unflatten(-1, (groups, state))


def ss2d_scan_torch(
    x: Tensor,
    x_proj_weight: Tensor,
    dt_projs_weight: Tensor,
    dt_projs_bias: Tensor,
    A_logs: Tensor,
    Ds: Tensor,
) -> Tensor:
    """The SS2D core on a channel-last map. x: (B, H, W, D) -> y: (B, H, W, D) float32 (x's dtype if
    that is 16-bit, ``ss2d_output``).

    The x- and dt-projections are per-pixel, so they run once in pixel order for all four
    directions; only the scan itself reads the pixels in each direction's order.
    """
    batch, height, width, dim = x.shape
    groups = x_proj_weight.shape[0]
    state = A_logs.shape[1]
    flat, dts, Bs, Cs = ss2d_projections(x, x_proj_weight, dt_projs_weight)

    order = scan_orders(height, width, x.device)  # (4, L)
    k = torch.arange(groups, device=x.device)[:, None]
    y = selective_scan_time_major(
        flat[:, order].permute(2, 0, 1, 3),  # (L, B, 4, D)
        dts[:, order, k].permute(2, 0, 1, 3),
        -torch.exp(A_logs.float()).view(groups, dim, state),
        Bs[:, order, k].permute(2, 0, 1, 3),  # (L, B, 4, N)
        Cs[:, order, k].permute(2, 0, 1, 3),
        Ds.view(groups, dim),
        dt_projs_bias.reshape(groups, dim),
        True,
    )
    # pixel p of direction k was step inverse[k, p]; merging sums the four directions per pixel
    inverse = order.argsort(dim=1)
    y = y[inverse, :, k].sum(0)  # (L, B, D)
    return ss2d_output(y.permute(1, 0, 2).reshape(batch, height, width, dim), x)
