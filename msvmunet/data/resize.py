"""Resizing slices the way the official code does with ``scipy.ndimage.zoom``, on tensors.

``zoom`` maps the first and last pixel centres of the input onto those of the output (corner
alignment). Images use cubic interpolation (here PyTorch's bicubic convolution, a = -0.75, in
place of zoom's cubic B-spline), labels use the nearest input pixel, so they stay class indices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_images(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) float -> (B, C, S, S) (or ``size=(h, w)``), bicubic, corners aligned."""
    size = _pair(size)
    if tuple(images.shape[-2:]) == size:
        return images
    return F.interpolate(images, size=size, mode="bicubic", align_corners=True)


def resize_labels(labels: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """(B, H, W) integer -> (B, S, S), nearest input pixel, corners aligned (like ``zoom(order=0)``)."""
    size = _pair(size)
    h, w = labels.shape[-2:]
    if (h, w) == size:
        return labels
    rows = _nearest_index(h, size[0], labels.device)
    cols = _nearest_index(w, size[1], labels.device)
    return labels.index_select(-2, rows).index_select(-1, cols)


def _nearest_index(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    if n_out == 1:
        return torch.zeros(1, dtype=torch.long, device=device)
    pos = torch.arange(n_out, dtype=torch.float64, device=device) * ((n_in - 1) / (n_out - 1))
    return torch.round(pos).long().clamp_(0, n_in - 1)


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    return (int(size[0]), int(size[1]))
