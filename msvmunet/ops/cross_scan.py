"""Cross-scan and cross-merge: the four scan orders of SS2D.

Direction 0 reads the map row by row, direction 1 column by column, directions 2 and 3 read
those two sequences backwards. Cross-merge maps each direction's output back to its pixel and
sums the four. These are the official ``CrossScan`` / ``CrossMerge`` (channel-first, (B, D, H, W)).
"""

from __future__ import annotations

import torch
from torch import Tensor


def cross_scan(x: Tensor) -> Tensor:
    """x: (B, D, H, W) -> xs: (B, 4, D, H*W)."""
    b, d, h, w = x.shape
    rows = x.reshape(b, d, h * w)
    cols = x.transpose(2, 3).reshape(b, d, h * w)
    xs = torch.stack([rows, cols], dim=1)
    return torch.cat([xs, xs.flip(-1)], dim=1)


def cross_merge(ys: Tensor, height: int, width: int) -> Tensor:
    """ys: (B, 4, D, H*W) -> y: (B, D, H*W), the sum of the four directions at each pixel."""
    b, k, d, length = ys.shape
    if k != 4 or length != height * width:
        raise ValueError(f"cross_merge expects (B, 4, D, {height}*{width}), got {tuple(ys.shape)}")
    ys = ys[:, 0:2] + ys[:, 2:4].flip(-1)
    cols = ys[:, 1].reshape(b, d, width, height).transpose(2, 3).reshape(b, d, length)
    return ys[:, 0] + cols


def scan_orders(height: int, width: int, device: torch.device | None = None) -> Tensor:
    """(4, H*W) long: entry [k, t] is the row-major pixel index read at step t of direction k."""
    rows = torch.arange(height * width, device=device)
    cols = rows.view(height, width).t().reshape(-1)
    return torch.stack([rows, cols, rows.flip(0), cols.flip(0)])
