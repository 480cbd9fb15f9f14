"""The selective scan by its definition: a sequential float64 loop. For tests only.

For every batch b, channel c = k * D + d of direction k, and state n::

    delta_t = softplus(delta[b, c, t] + delta_bias[c])        (if delta_softplus)
    h_t[n]  = exp(delta_t * A[c, n]) * h_{t-1}[n] + delta_t * B[b, k, n, t] * u[b, c, t]
    y[b, c, t] = sum_n C[b, k, n, t] * h_t[n] + D[c] * u[b, c, t]

with h_{-1} = 0. This is the recurrence of the official CUDA kernel (``selective_scan_cuda_oflex``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def selective_scan_reference(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = True,
) -> Tensor:
    """u, delta: (B, K*D, L); A: (K*D, N); B, C: (B, K, N, L); D, delta_bias: (K*D,) -> y (B, K*D, L) float64."""
    batch, channels, length = u.shape
    groups = B.shape[1]
    per_group = channels // groups
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    B = B.repeat_interleave(per_group, dim=1)  # (B, K*D, N, L)
    C = C.repeat_interleave(per_group, dim=1)
    h = u.new_zeros(batch, channels, A.shape[1])
    ys = []
    for t in range(length):
        dt = delta[:, :, t, None]
        h = torch.exp(dt * A) * h + dt * B[..., t] * u[:, :, t, None]
        ys.append((h * C[..., t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D.double()[:, None] * u
    return y


def ss2d_scan_reference(
    x: Tensor,
    x_proj_weight: Tensor,
    dt_projs_weight: Tensor,
    dt_projs_bias: Tensor,
    A_logs: Tensor,
    Ds: Tensor,
) -> Tensor:
    """The SS2D core as the official code computes it, in float64. x: (B, H, W, D) -> (B, H, W, D).

    Cross-scan into four materialised sequences, per-direction projections, the sequential scan,
    cross-merge.
    """
    from ..cross_scan import cross_merge, cross_scan

    batch, height, width, dim = x.shape
    length = height * width
    rank = dt_projs_weight.shape[2]
    state = (x_proj_weight.shape[1] - rank) // 2
    xs = cross_scan(x.double().permute(0, 3, 1, 2))  # (B, 4, D, L)
    x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, x_proj_weight.double())
    dts, Bs, Cs = x_dbl.split([rank, state, state], dim=2)
    dts = torch.einsum("bkrl,kdr->bkdl", dts, dt_projs_weight.double())
    ys = selective_scan_reference(
        xs.reshape(batch, -1, length),
        dts.reshape(batch, -1, length),
        -torch.exp(A_logs.double()),
        Bs,
        Cs,
        Ds,
        dt_projs_bias.reshape(-1),
        delta_softplus=True,
    )
    y = cross_merge(ys.view(batch, 4, dim, length), height, width)
    return y.view(batch, dim, height, width).permute(0, 2, 3, 1)
