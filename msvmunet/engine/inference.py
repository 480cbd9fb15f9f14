"""Slice-by-slice inference on volumes, as the official evaluation does it, with slices batched.

Each (H, W) slice is resized to the network's size with a cubic spline (``scipy.ndimage.zoom``,
order 3), normalised, segmented, arg-maxed, and the labels resized back with nearest neighbour
(order 0).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

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


# The mirrorings of test-time augmentation (nnU-Net's in 2-D): none, x (width), y (height), xy.
MIRRORS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))
NO_MIRRORS: tuple[tuple[int, ...], ...] = ((),)


def mean_softmax(nets: Sequence[torch.nn.Module], x: torch.Tensor, mirrors: Sequence[tuple[int, ...]] = NO_MIRRORS,
                 precision: str = "fp32") -> torch.Tensor:
    """x: (B, C, S, S) -> the softmax (B, K, S, S) float32 (K classes) averaged over ``nets`` and ``mirrors``.

    The mirrored copies go through each net in one batch of ``len(mirrors) * B`` images, so a
    net runs once per call whatever the number of mirrorings.
    """
    batch = torch.cat([x.flip(dims) if dims else x for dims in mirrors]) if len(mirrors) > 1 else x
    total = None
    for net in nets:
        with autocast_context(x.device, precision):
            logits = net(batch)
        probs = logits.float().softmax(1).split(x.shape[0])
        for dims, p in zip(mirrors, probs):
            p = p.flip(dims) if dims else p
            total = p if total is None else total.add_(p)  # p: a fresh tensor (softmax output), ours to change
    assert total is not None
    return total.div_(len(nets) * len(mirrors)) if len(nets) * len(mirrors) > 1 else total


@torch.no_grad()
def predict_volume(
    model: torch.nn.Module | Sequence[torch.nn.Module],
    volume: np.ndarray,
    *,
    size: int = 224,
    batch_size: int = 32,
    precision: str = "auto",
    mean: float = 0.5,
    std: float = 0.5,
    tta: bool = False,
    probabilities: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """volume: (D, H, W) or (D, C, H, W) float in [0, 1] -> labels (D, H, W) uint8 (int64 past 256 classes).

    ``model`` may be several nets (an ensemble: their softmax is averaged); ``tta`` averages over
    the four mirrorings of :data:`MIRRORS`. ``batch_size`` counts the images of one forward pass,
    mirrored copies included. With ``probabilities``, also the averaged softmax (D, K, H, W)
    float32 (K classes), resized back like the labels (nearest), so that the labels are its arg-max.
    """
    if volume.ndim not in (3, 4):
        raise ValueError(f"predict_volume expects a (D, H, W) or (D, C, H, W) volume, got shape {volume.shape}")
    nets = [unwrap(m) for m in (model if isinstance(model, (list, tuple)) else [model])]
    device = next(nets[0].parameters()).device
    precision = resolve_precision(precision, device)
    mirrors = MIRRORS if tta else NO_MIRRORS
    was_training = [net.training for net in nets]
    for net in nets:
        net.eval()
    depth, height, width = volume.shape[0], *volume.shape[-2:]
    num_classes = nets[0].num_classes
    out = np.zeros((depth, height, width), dtype=np.uint8 if num_classes <= 256 else np.int64)
    probs_out = np.zeros((depth, num_classes, height, width), np.float32) if probabilities else None
    scale_in = (size / height, size / width)
    scale_out = (height / size, width / size)
    resize = (height, width) != (size, size)
    try:
        for chunk in _batches(depth, max(1, batch_size // len(mirrors))):
            slices = volume[chunk].astype(np.float32, copy=False)
            if resize:
                scale = scale_in if slices.ndim == 3 else (1.0, *scale_in)  # channels kept as they are
                slices = np.stack([zoom(s, scale, order=3) for s in slices])
            x = torch.from_numpy((slices - mean) / std)
            x = (x.unsqueeze(1) if x.ndim == 3 else x).to(device, non_blocking=True)
            probs = mean_softmax(nets, x, mirrors, precision)
            labels = probs.argmax(1).cpu().numpy()
            out[chunk] = np.stack([zoom(l, scale_out, order=0) for l in labels]) if resize else labels
            if probs_out is not None:
                p = probs.cpu().numpy()
                probs_out[chunk] = np.stack([zoom(q, (1, *scale_out), order=0) for q in p]) if resize else p
    finally:
        for net, mode in zip(nets, was_training):
            net.train(mode)
    return (out, probs_out) if probs_out is not None else out
