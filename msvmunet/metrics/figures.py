"""Figures of an evaluation: slice overlays (Pillow) and the per-class Dice box plot (matplotlib, optional).

Colours are RGB triples for the foreground classes 1 .. C-1, e.g. ``labels.SYNAPSE.colors``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..errors import DataError
from .._files import PathLike, atomic_write
from .labels import RGB, default_colors
from .protocols import Aggregator


def overlay_image(
    image: np.ndarray,
    gt: np.ndarray | None,
    pred: np.ndarray,
    colors: Sequence[RGB],
    alpha: float = 0.5,
    window: tuple[float, float] | None = None,
) -> Image.Image:
    """image: (H, W) intensities; gt, pred: (H, W) labels -> an RGB image of 3*W by H pixels, three panels:

    the grey image; the ground truth filled in colour; the prediction filled in colour with the ground
    truth's outline drawn over it in the class colour. ``window`` = (low, high) intensity range shown, by
    default the slice's own range. Without ground truth (``gt=None``, a new scan): two panels, the grey
    image and the prediction.
    """
    image = np.asarray(image, dtype=np.float64)
    pred = np.asarray(pred).astype(np.int64)
    gt = pred if gt is None else np.asarray(gt).astype(np.int64)
    has_gt = gt is not pred
    if image.ndim != 2 or gt.shape != image.shape or pred.shape != image.shape:
        raise DataError(
            f"overlay needs one 2-D slice of image, ground truth and prediction of one shape, got "
            f"{image.shape}, {gt.shape}, {pred.shape}"
        )
    low, high = window if window is not None else (float(image.min()), float(image.max()))
    grey = np.clip((image - low) / (high - low), 0, 1) if high > low else np.zeros_like(image)
    grey = np.repeat((255 * grey)[..., None], 3, axis=-1)
    lut = _lookup(colors, min(gt.min(), pred.min()), max(gt.max(), pred.max()))

    def filled(labels: np.ndarray) -> np.ndarray:
        out = grey.copy()
        on = labels > 0
        out[on] = (1 - alpha) * grey[on] + alpha * lut[labels[on]]
        return out

    if not has_gt:
        return Image.fromarray(np.round(np.concatenate([grey, filled(pred)], axis=1)).astype(np.uint8))
    with_outline = filled(pred)
    edge = _outline(gt)
    with_outline[edge] = lut[gt[edge]]
    panels = np.concatenate([grey, filled(gt), with_outline], axis=1)
    return Image.fromarray(np.round(panels).astype(np.uint8))


def save_overlay(path: PathLike, image: np.ndarray, gt: np.ndarray | None, pred: np.ndarray, colors: Sequence[RGB],
                 alpha: float = 0.5, window: tuple[float, float] | None = None) -> Path:
    """Write ``overlay_image(...)`` as a PNG."""
    picture = overlay_image(image, gt, pred, colors, alpha, window)
    return atomic_write(path, lambda f: picture.save(f, format="PNG"))


def pick_slices(gt: np.ndarray, n: int = 3) -> list[int]:
    """Up to n indices along axis 0, evenly spread over the slices that hold ground-truth foreground."""
    filled = np.flatnonzero(np.asarray(gt).reshape(len(gt), -1).any(axis=1))
    if filled.size == 0:
        return [len(gt) // 2] if len(gt) else []
    picks = np.linspace(0, filled.size - 1, num=min(n, filled.size)).round().astype(int)
    return sorted(set(filled[picks].tolist()))


def save_case_overlays(
    out_dir: PathLike,
    case: str,
    image: np.ndarray,
    gt: np.ndarray | None,
    pred: np.ndarray,
    colors: Sequence[RGB],
    slices: Sequence[int] | None = None,
    window: tuple[float, float] | None = None,
) -> list[Path]:
    """image, gt, pred: (Z, Y, X). One PNG per slice index (default ``pick_slices(gt)``), ``<case>_z<k>.png``.

    ``gt=None`` (a new scan): the slices are picked from the prediction, and drawn without ground truth.
    """
    image, pred = np.asarray(image), np.asarray(pred)
    gt = None if gt is None else np.asarray(gt)
    reference = pred if gt is None else gt
    if image.ndim != 3 or reference.shape != image.shape or pred.shape != image.shape:
        raise DataError(
            f"case {case!r}: overlays need (Z, Y, X) image, ground truth and prediction of one shape, got "
            f"{image.shape}, {reference.shape}, {pred.shape}"
        )
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", case)
    chosen = pick_slices(reference) if slices is None else list(slices)
    for z in chosen:
        if not -len(image) <= z < len(image):
            raise DataError(f"case {case!r}: slice {z} is outside 0 .. {len(image) - 1}")
    out_dir = Path(out_dir)
    return [
        save_overlay(out_dir / f"{stem}_z{z % len(image):03d}.png", image[z], None if gt is None else gt[z], pred[z],
                     colors, window=window)
        for z in chosen
    ]


def save_dice_boxplot(path: PathLike, aggregator: Aggregator, colors: Sequence[RGB] | None = None,
                      dpi: int = 100) -> Path:
    """Box plot of the per-case Dice of each class (undefined values left out); needs matplotlib.

    The figure is ``max(6, 0.8 * C + 1.5)`` by 4.5 inches at ``dpi``.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError('the Dice box plot needs matplotlib: pip install "msvm-unet[viz]"') from error
    names = aggregator.class_names
    colors = default_colors(len(names)) if colors is None else colors
    data = [
        [v for v in (results[i].dice for results in aggregator.cases.values()) if not math.isnan(v)]
        for i in range(len(names))
    ]
    fig = Figure(figsize=(max(6.0, 0.8 * len(names) + 1.5), 4.5), dpi=dpi)
    ax = fig.add_subplot()
    boxes = ax.boxplot([d if d else [math.nan] for d in data], patch_artist=True, widths=0.6, showfliers=False,
                       medianprops={"color": "black"})
    for patch, color in zip(boxes["boxes"], colors):
        patch.set_facecolor(tuple(v / 255 for v in color))
    jitter = np.random.default_rng(0)
    for i, d in enumerate(data, start=1):  # every case as a dot, so outliers and small n stay visible
        ax.scatter(i + jitter.uniform(-0.12, 0.12, len(d)), d, s=9, color="black", alpha=0.6, zorder=3)
    ax.set_xticks(range(1, len(names) + 1), [f"{n}\n(n={len(d)})" for n, d in zip(names, data)], fontsize=8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("Dice")
    ax.set_title(f"Dice per class, protocol '{aggregator.protocol}', {len(aggregator.cases)} cases")
    ax.grid(axis="y", alpha=0.3)
    fig.subplots_adjust(bottom=0.18)
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))


def _lookup(colors: Sequence[RGB], min_label: int, max_label: int) -> np.ndarray:
    if min_label < 0 or max_label > len(colors):
        raise DataError(
            f"labels {min_label} .. {max_label} do not all have a colour: {len(colors)} colours given, "
            f"for classes 1 .. {len(colors)}"
        )
    lut = np.zeros((len(colors) + 1, 3))
    lut[1:] = np.asarray(colors, dtype=np.float64).reshape(-1, 3)
    return lut


def _outline(labels: np.ndarray) -> np.ndarray:
    """Foreground pixels with a 4-neighbour of another label."""
    edge = np.zeros(labels.shape, dtype=bool)
    for axis in (0, 1):
        differs = np.diff(labels, axis=axis) != 0
        lead = [slice(None)] * 2
        lead[axis] = slice(None, -1)
        trail = [slice(None)] * 2
        trail[axis] = slice(1, None)
        edge[tuple(lead)] |= differs
        edge[tuple(trail)] |= differs
    return edge & (labels > 0)
