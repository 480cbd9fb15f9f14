"""Figures of an evaluation: slice overlays (Pillow) and the per-class Dice box plot (matplotlib, optional).

Colours are RGB triples for the foreground classes 1 .. C-1, e.g. ``labels.SYNAPSE.colors``; one class has one
colour in the overlays, their legends, ``colorize_labels`` previews and the box plot.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import DataError
from .._files import PathLike, atomic_write
from .labels import RGB, colors_for
from .protocols import Aggregator


MIN_PANEL = 256  # pixels, the shorter side of every panel at least
GAP = 8  # pixels between panels and around the legend
BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)


def colorize_labels(labels: np.ndarray, colors: Sequence[RGB]) -> np.ndarray:
    """labels: (...) class indices -> (..., 3) uint8 RGB: class ``i`` in ``colors[i - 1]``, the background black.

    The colours of the overlays and the Dice box plot, e.g. for a preview beside an index-valued label PNG.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iub":
        raise DataError(f"colorize_labels needs integer class indices, got {labels.dtype}")
    labels = labels.astype(np.int64)
    lut = _lookup(colors, int(labels.min(initial=0)), int(labels.max(initial=0)))
    return lut.astype(np.uint8)[labels]


def overlay_panels(
    image: np.ndarray,
    gt: np.ndarray | None,
    pred: np.ndarray,
    colors: Sequence[RGB],
    alpha: float = 0.5,
    window: tuple[float, float] | None = None,
) -> list[tuple[str, np.ndarray]]:
    """image: (H, W) intensities; gt, pred: (H, W) labels -> titled (H, W, 3) uint8 panels at the slice's size:

    "Image", the grey slice; "Ground truth", filled in colour; "Prediction", filled in colour with the ground
    truth's outline drawn over it in the class colour. Without ground truth (``gt=None``, a new scan): "Image" and
    "Prediction". ``window`` = (low, high) intensity range shown, by default the slice's own range.
    """
    image = np.asarray(image, dtype=np.float64)
    pred = np.asarray(pred).astype(np.int64)
    has_gt = gt is not None
    gt = pred if gt is None else np.asarray(gt).astype(np.int64)
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

    def rgb(panel: np.ndarray) -> np.ndarray:
        return np.round(panel).astype(np.uint8)

    if not has_gt:
        return [("Image", rgb(grey)), ("Prediction", rgb(filled(pred)))]
    with_outline = filled(pred)
    edge = _outline(gt)
    with_outline[edge] = lut[gt[edge]]
    return [("Image", rgb(grey)), ("Ground truth", rgb(filled(gt))), ("Prediction", rgb(with_outline))]


def overlay_image(
    image: np.ndarray,
    gt: np.ndarray | None,
    pred: np.ndarray,
    colors: Sequence[RGB],
    alpha: float = 0.5,
    window: tuple[float, float] | None = None,
    names: Sequence[str] | None = None,
    min_panel: int = MIN_PANEL,
) -> Image.Image:
    """The ``overlay_panels`` side by side, each enlarged by a whole factor (nearest neighbour) until its shorter
    side has ``min_panel`` pixels, titled above, with a legend of the class colours below (``names[i - 1]`` for
    class ``i``, default "class i"; "Outline: ground truth" when there is one). An RGB picture.

    ``picture.info["panels"]`` holds each panel's box (left, top, right, bottom) in the picture.
    """
    panels = overlay_panels(image, gt, pred, colors, alpha, window)
    height, width = panels[0][1].shape[:2]
    scale = max(1, math.ceil(min_panel / max(1, min(height, width))))
    names = [f"class {i}" for i in range(1, len(colors) + 1)] if names is None else list(names)
    if len(names) != len(colors):
        raise DataError(f"the legend has {len(names)} class names for {len(colors)} colours; give one name per colour")
    font = _font(max(14, min(28, scale * width // 18)))
    line = _text_size(font, "Ag")[1] + GAP
    panel_w, panel_h = scale * width, scale * height
    total_w = len(panels) * panel_w + (len(panels) + 1) * GAP
    entries = list(zip(names, colors)) + ([("Outline: ground truth", None)] if gt is not None else [])
    rows = _legend_rows(entries, font, line, total_w - 2 * GAP)
    top = GAP + line
    picture = Image.new("RGB", (total_w, top + panel_h + GAP + len(rows) * line + GAP), BACKGROUND)
    draw = ImageDraw.Draw(picture)
    boxes = []
    for i, (title, panel) in enumerate(panels):
        left = GAP + i * (panel_w + GAP)
        picture.paste(Image.fromarray(np.repeat(np.repeat(panel, scale, axis=0), scale, axis=1)), (left, top))
        boxes.append((left, top, left + panel_w, top + panel_h))
        draw.text((left, GAP), title, fill=TEXT, font=font)
    y = top + panel_h + GAP
    for row in rows:
        x = GAP
        for name, color, advance in row:
            swatch = line - GAP
            if color is None:
                draw.rectangle((x, y, x + swatch - 1, y + swatch - 1), outline=TEXT, width=2)
            else:
                draw.rectangle((x, y, x + swatch - 1, y + swatch - 1), fill=tuple(color))
            draw.text((x + swatch + GAP // 2, y), name, fill=TEXT, font=font)
            x += advance
        y += line
    picture.info["panels"] = boxes
    return picture


def save_overlay(path: PathLike, image: np.ndarray, gt: np.ndarray | None, pred: np.ndarray, colors: Sequence[RGB],
                 alpha: float = 0.5, window: tuple[float, float] | None = None,
                 names: Sequence[str] | None = None) -> Path:
    """Write ``overlay_image(...)`` as a PNG."""
    picture = overlay_image(image, gt, pred, colors, alpha, window, names)
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
    names: Sequence[str] | None = None,
) -> list[Path]:
    """image, gt, pred: (Z, Y, X). One ``overlay_image`` PNG per slice index (default ``pick_slices(gt)``),
    ``<case>_z<k>.png``; ``names`` label the legend's colours.

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
                     colors, window=window, names=names)
        for z in chosen
    ]


def save_dice_boxplot(path: PathLike, aggregator: Aggregator, colors: Sequence[RGB] | None = None,
                      dpi: int = 100) -> Path:
    """Box plot of the per-case Dice of each class (undefined values left out); needs matplotlib.

    Boxes in ``colors`` (default ``colors_for(class names)``: the colours of the overlays).

    The figure is ``max(6, 0.8 * C + 1.5)`` by 4.5 inches at ``dpi``.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError('the Dice box plot needs matplotlib: pip install "msvm-unet[viz]"') from error
    names = aggregator.class_names
    colors = colors_for(names) if colors is None else colors
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


def _font(size: int) -> ImageFont.ImageFont:
    """Pillow's own scalable font at ``size`` pixels (Pillow >= 10.1 with FreeType), else its small bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # older Pillow: no size argument
        return ImageFont.load_default()


def _text_size(font: ImageFont.ImageFont, text: str) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text)
    return int(right), int(bottom)


def _legend_rows(entries: list[tuple[str, RGB | None]], font: ImageFont.ImageFont, line: int,
                 width: int) -> list[list[tuple[str, RGB | None, int]]]:
    """The legend's entries (name, colour, advance in pixels) in rows no wider than ``width``."""
    rows: list[list[tuple[str, RGB | None, int]]] = [[]]
    used = 0
    for name, color in entries:
        advance = line + _text_size(font, name)[0] + 2 * GAP
        if rows[-1] and used + advance > width:
            rows.append([])
            used = 0
        rows[-1].append((name, color, advance))
        used += advance
    return rows
