"""Slice-by-slice inference on volumes, as the official evaluation does it, with slices batched.

Each (H, W) slice is resized to the network's size with a cubic spline (``scipy.ndimage.zoom``,
order 3), normalised, segmented, arg-maxed, and the labels resized back with nearest neighbour
(order 0).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch
from scipy.ndimage import zoom

from ..errors import ConfigError
from .distributed import unwrap


def autocast_context(device: torch.device, precision: str, cache: bool = True):
    """bf16/fp16 autocast on CUDA (and bf16 on CPU when asked); nothing for fp32.

    ``cache=False`` for CUDA-graph capture (the cast-weight cache must not outlive the capture).
    """
    if precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=cache)
    return contextlib.nullcontext()


def pick_device(device: str) -> torch.device:
    """``auto`` -> CUDA when PyTorch sees a GPU, else the CPU; asking for CUDA without one is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for, but PyTorch sees no CUDA device; use --device cpu")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


@torch.no_grad()
def predict_volume(
    model: torch.nn.Module,
    volume: np.ndarray,
    *,
    size: int = 224,
    batch_size: int = 32,
    precision: str = "auto",
    mean: float = 0.5,
    std: float = 0.5,
) -> np.ndarray:
    """volume: (D, H, W) or (D, C, H, W) float in [0, 1] -> labels (D, H, W) uint8 (int64 past 256 classes)."""
    if volume.ndim not in (3, 4):
        raise ValueError(f"predict_volume expects a (D, H, W) or (D, C, H, W) volume, got shape {volume.shape}")
    net = unwrap(model)
    device = next(net.parameters()).device
    precision = resolve_precision(precision, device)
    was_training = net.training
    net.eval()
    depth, height, width = volume.shape[0], *volume.shape[-2:]
    num_classes = net.num_classes
    out = np.zeros((depth, height, width), dtype=np.uint8 if num_classes <= 256 else np.int64)
    scale_in = (size / height, size / width)
    scale_out = (height / size, width / size)
    resize = (height, width) != (size, size)
    try:
        for chunk in _batches(depth, batch_size):
            slices = volume[chunk].astype(np.float32, copy=False)
            if resize:
                scale = scale_in if slices.ndim == 3 else (1.0, *scale_in)  # channels kept as they are
                slices = np.stack([zoom(s, scale, order=3) for s in slices])
            x = torch.from_numpy((slices - mean) / std)
            x = (x.unsqueeze(1) if x.ndim == 3 else x).to(device, non_blocking=True)
            with autocast_context(device, precision):
                logits = net(x)
            labels = logits.argmax(1).cpu().numpy()
            out[chunk] = np.stack([zoom(l, scale_out, order=0) for l in labels]) if resize else labels
    finally:
        net.train(was_training)
    return out
