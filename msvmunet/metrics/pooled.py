"""Pixel metrics from a confusion matrix pooled over all test images, as VM-UNet, H-vmunet and
UltraLight VM-UNet report them on ISIC 2017/2018.

Those papers flatten every test image's prediction and mask into one list of pixels and read off
TP, FP, FN, TN: mIoU = TP / (TP + FP + FN), DSC = F1 = 2 TP / (2 TP + FP + FN), accuracy =
(TP + TN) / N, sensitivity = TP / (TP + FN), specificity = TN / (TN + FP). For two classes that is
the foreground class (their "mIoU" is the foreground IoU); with more classes each foreground class
is scored one-vs-rest and the means are over the foreground classes, accuracy is the fraction of
pixels labelled right. Pixels are counted at each image's own size (predictions resized back).

>>> pooled = PooledConfusion(("polyp",))
>>> pooled.add("img1", pred, gt)                     # (..., H, W) label arrays
>>> pooled.total()["dsc"], pooled.per_image()["img1"]["miou"]
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from .._files import PathLike, atomic_write_text

POOLED_METRICS = ("miou", "dsc", "accuracy", "sensitivity", "specificity")
TITLES = {"miou": "mIoU", "dsc": "DSC (F1)", "accuracy": "Accuracy", "sensitivity": "Sensitivity",
          "specificity": "Specificity"}


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 pixel counts, rows ground truth, columns prediction."""
    pred, gt = np.asarray(pred).ravel().astype(np.int64), np.asarray(gt).ravel().astype(np.int64)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction and ground truth differ in size: {pred.size} vs {gt.size}")
    return np.bincount(gt * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def scores(matrix: np.ndarray) -> dict[str, object]:
    """The metrics of one confusion matrix: ``POOLED_METRICS`` (means over the foreground classes) and
    ``classes``: the same per foreground class (NaN where a ratio is 0/0)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    total = matrix.sum()
    per_class = []
    for c in range(1, len(matrix)):
        tp = matrix[c, c]
        fn = matrix[c].sum() - tp
        fp = matrix[:, c].sum() - tp
        tn = total - tp - fn - fp
        per_class.append({"miou": _ratio(tp, tp + fp + fn), "dsc": _ratio(2 * tp, 2 * tp + fp + fn),
                          "accuracy": _ratio(tp + tn, total), "sensitivity": _ratio(tp, tp + fn),
                          "specificity": _ratio(tn, tn + fp)})
    out: dict[str, object] = {m: _nanmean([c[m] for c in per_class]) for m in POOLED_METRICS}
    out["accuracy"] = _ratio(np.trace(matrix), total)
    out["classes"] = per_class
    return out


def _nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


class PooledConfusion:
    """Confusion matrices per image and their sum; ``class_names`` are the foreground classes."""

    def __init__(self, class_names: Sequence[str]) -> None:
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names) + 1
        self.images: dict[str, np.ndarray] = {}

    def add(self, name: str, pred: np.ndarray, gt: np.ndarray) -> None:
        self.images[name] = confusion_matrix(pred, gt, self.num_classes)

    def matrix(self) -> np.ndarray:
        return sum(self.images.values(), np.zeros((self.num_classes,) * 2, dtype=np.int64))

    def total(self) -> dict[str, object]:
        return scores(self.matrix())

    def per_image(self) -> dict[str, dict[str, object]]:
        return {name: scores(m) for name, m in self.images.items()}


def format_pooled(pooled: PooledConfusion) -> str:
    """Markdown: the pooled table (%, two decimals as the papers print), then one row per class."""
    total = pooled.total()
    lines = [f"## Pooled pixel metrics ({len(pooled.images)} images, confusion matrix summed over them)", "",
             "| " + " | ".join(TITLES[m] + " (%)" for m in POOLED_METRICS) + " |",
             "|" + "---:|" * len(POOLED_METRICS),
             "| " + " | ".join(_pct(total[m]) for m in POOLED_METRICS) + " |"]
    if len(pooled.class_names) > 1:
        lines += ["", "| Class | " + " | ".join(TITLES[m] + " (%)" for m in POOLED_METRICS) + " |",
                  "|---|" + "---:|" * len(POOLED_METRICS)]
        lines += [f"| {name} | " + " | ".join(_pct(c[m]) for m in POOLED_METRICS) + " |"
                  for name, c in zip(pooled.class_names, total["classes"])]
    return "\n".join(lines) + "\n"


def write_pooled_report(out_dir: PathLike, pooled: PooledConfusion) -> dict[str, Path]:
    """``images.csv`` (one row per image and class, and per image the means), ``summary.md``, ``summary.json``."""
    out_dir = Path(out_dir)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("image", "class", *POOLED_METRICS))
    for name, result in pooled.per_image().items():
        writer.writerow((name, "mean", *(repr(float(result[m])) for m in POOLED_METRICS)))
        if len(pooled.class_names) > 1:
            for cls, c in zip(pooled.class_names, result["classes"]):
                writer.writerow((name, cls, *(repr(float(c[m])) for m in POOLED_METRICS)))
    total = pooled.total()
    document = {
        "n_images": len(pooled.images),
        "confusion_matrix": pooled.matrix().tolist(),
        "total": {m: _json(total[m]) for m in POOLED_METRICS},
        "classes": [{"name": n, **{m: _json(c[m]) for m in POOLED_METRICS}}
                    for n, c in zip(pooled.class_names, total["classes"])],
    }
    return {
        "images": atomic_write_text(out_dir / "images.csv", buffer.getvalue()),
        "markdown": atomic_write_text(out_dir / "summary.md", format_pooled(pooled)),
        "json": atomic_write_text(out_dir / "summary.json", json.dumps(document, indent=2, allow_nan=False) + "\n"),
    }


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.2f}"


def _json(x: float) -> float | None:
    return None if math.isnan(x) else float(x)
