"""Evaluation protocols: per-case, per-class metrics of label volumes, and their aggregation.

``paper``  reproduces the MSVM-UNet test code: no spacing (distances in voxels), and for class c with
           P = pred == c, G = gt == c:
             |P| > 0 and |G| > 0  -> dice, hd95, jaccard, asd as measured;
             |P| > 0 and |G| = 0  -> dice 1, hd95 0, jaccard 1, asd 0;
             otherwise            -> 0, 0, 0, 0 (a missed organ, or a class absent from both).
           Means over cases per class, then over classes.
``strict`` measures in mm with each case's spacing; a metric that is undefined for a case (hd95 and asd when
           either mask is empty, dice and jaccard when both are) is NaN, left out of the means and counted.
           Means are NaN-aware at both levels and report how many values they used.

See docs/evaluation.md for the rules and the reasons for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.ndimage import find_objects

from ..errors import ConfigError, DataError
from .binary import Spacing, binary_metrics

METRICS: tuple[str, ...] = ("dice", "hd95", "jaccard", "asd")
PROTOCOLS: tuple[str, ...] = ("paper", "strict")
UNITS = {"paper": "voxels", "strict": "mm"}


@dataclass(frozen=True)
class ClassResult:
    """The metrics of one foreground class in one case, and the voxel counts they came from."""

    class_id: int
    dice: float
    hd95: float
    jaccard: float
    asd: float
    pred_voxels: int
    gt_voxels: int

    def metric(self, name: str) -> float:
        return getattr(self, name)


def check_protocol(protocol: str, spacing: Spacing) -> None:
    """Raise ConfigError unless ``protocol`` is known and ``spacing`` fits it (given for strict, not for paper)."""
    _check_name(protocol)
    if protocol == "paper" and spacing is not None:
        raise ConfigError(
            "the 'paper' protocol measures distances in voxels, as the published numbers do; "
            "drop spacing=, or use protocol='strict' to measure in mm"
        )
    if protocol == "strict" and spacing is None:
        raise ConfigError(
            "the 'strict' protocol measures in mm and needs the case's voxel spacing (z, y, x); "
            "pass spacing= (spacing=1.0 measures in voxels on purpose)"
        )


def class_metrics(
    pred: np.ndarray, gt: np.ndarray, protocol: str = "paper", spacing: Spacing = None, distances: bool = True
) -> dict[str, float]:
    """Metrics of one binary pair under a protocol: keys ``dice``, ``hd95``, ``jaccard``, ``asd``.

    ``distances=False`` leaves hd95 and asd NaN where they would be measured (overlap metrics only).
    """
    check_protocol(protocol, spacing)
    if protocol == "strict":
        return binary_metrics(pred, gt, spacing, distances)
    has_pred, has_gt = bool(np.any(pred)), bool(np.any(gt))
    if has_pred and has_gt:
        return binary_metrics(pred, gt, distances=distances)
    if has_pred:
        return {"dice": 1.0, "hd95": 0.0, "jaccard": 1.0, "asd": 0.0}
    return dict.fromkeys(METRICS, 0.0)


def evaluate_case(
    pred: np.ndarray, gt: np.ndarray, num_classes: int, protocol: str = "paper", spacing: Spacing = None,
    distances: bool = True,
) -> list[ClassResult]:
    """pred, gt: integer label volumes of one shape, (Z, Y, X) or (H, W), background 0.

    Returns one ClassResult for each foreground class 1 .. num_classes - 1, in order.
    ``distances=False`` computes the overlap metrics only (hd95/asd NaN where measured), e.g. to validate.
    """
    check_protocol(protocol, spacing)
    if num_classes < 2:
        raise ConfigError(f"num_classes must count the background and at least one class, got {num_classes}")
    pred = _labels(pred, num_classes, "prediction")
    gt = _labels(gt, num_classes, "ground truth")
    if pred.shape != gt.shape:
        raise DataError(
            f"prediction and ground truth differ in shape: {pred.shape} vs {gt.shape}; "
            "resample the prediction to the ground truth's grid before measuring"
        )
    pred_boxes = find_objects(pred, max_label=num_classes - 1)
    gt_boxes = find_objects(gt, max_label=num_classes - 1)
    results = []
    for c in range(1, num_classes):
        # Every voxel of class c lies in the union of the two boxes; outside it both masks are empty.
        box = _union_box(pred_boxes[c - 1], gt_boxes[c - 1])
        if box is None:  # absent from both: measure two empty masks of one voxel
            box = (slice(0, 1),) * pred.ndim
        p, g = pred[box] == c, gt[box] == c
        values = class_metrics(p, g, protocol, spacing, distances)
        results.append(ClassResult(c, **values, pred_voxels=int(p.sum()), gt_voxels=int(g.sum())))
    return results


@dataclass(frozen=True)
class MetricSummary:
    """A mean over the values that are defined, how many that was, and how many were NaN."""

    mean: float
    n_used: int
    n_undefined: int

    @classmethod
    def of(cls, values: Sequence[float]) -> MetricSummary:
        values = np.asarray(values, dtype=np.float64)
        defined = values[~np.isnan(values)]
        mean = float(defined.mean()) if defined.size else float("nan")
        return cls(mean, int(defined.size), int(values.size - defined.size))


@dataclass(frozen=True)
class ClassSummary:
    class_id: int
    name: str
    metrics: dict[str, MetricSummary]


@dataclass(frozen=True)
class Summary:
    """Per-class means over cases, and their mean over classes, under one protocol."""

    protocol: str
    units: str
    n_cases: int
    classes: tuple[ClassSummary, ...]
    mean: dict[str, MetricSummary]  # over the classes whose mean is defined; n_used counts classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)


class Aggregator:
    """Collects per-case results, then summarises them. Case names must be unique. For example::

        agg = Aggregator(["Aorta", "Gallbladder"], protocol="paper")
        agg.add_case("case0001", pred, gt)  # or agg.add("case0001", evaluate_case(...)) from a worker
        agg.summary().mean["dice"].mean     # mean over classes of the per-class means over cases
    """

    def __init__(self, class_names: Sequence[str], protocol: str = "paper") -> None:
        _check_name(protocol)
        if not class_names:
            raise ConfigError("class_names must name the foreground classes 1 .. C-1, got none")
        self.class_names = tuple(class_names)
        self.protocol = protocol
        self._cases: dict[str, list[ClassResult]] = {}

    @property
    def num_classes(self) -> int:
        """Including the background."""
        return len(self.class_names) + 1

    @property
    def cases(self) -> dict[str, list[ClassResult]]:
        """Case name -> its per-class results, in the order the cases were added."""
        return dict(self._cases)

    def add_case(self, case: str, pred: np.ndarray, gt: np.ndarray, spacing: Spacing = None) -> list[ClassResult]:
        """Evaluate one case under this aggregator's protocol and keep its results."""
        results = evaluate_case(pred, gt, self.num_classes, self.protocol, spacing)
        self.add(case, results)
        return results

    def add(self, case: str, results: Sequence[ClassResult]) -> None:
        """Keep results computed elsewhere (e.g. by worker processes) with ``evaluate_case``."""
        if case in self._cases:
            raise DataError(f"case {case!r} was added twice; case names must be unique")
        ids = [r.class_id for r in results]
        if ids != list(range(1, self.num_classes)):
            raise DataError(f"case {case!r} has results for classes {ids}, expected 1 .. {self.num_classes - 1}")
        self._cases[case] = list(results)

    def summary(self) -> Summary:
        if not self._cases:
            raise DataError("no cases were evaluated; nothing to summarise")
        classes = []
        for c, name in enumerate(self.class_names, start=1):
            per_case = [results[c - 1] for results in self._cases.values()]
            metrics = {m: MetricSummary.of([r.metric(m) for r in per_case]) for m in METRICS}
            classes.append(ClassSummary(c, name, metrics))
        mean = {m: MetricSummary.of([cs.metrics[m].mean for cs in classes]) for m in METRICS}
        return Summary(self.protocol, UNITS[self.protocol], len(self._cases), tuple(classes), mean)


def _check_name(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown evaluation protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")


def _labels(volume: np.ndarray, num_classes: int, what: str) -> np.ndarray:
    """The volume as integers (find_objects needs them), checked to hold labels 0 .. num_classes-1 only."""
    volume = np.asarray(volume)
    if volume.dtype.kind not in "biuf":
        raise DataError(f"the {what} has dtype {volume.dtype}; pass a label volume of integers")
    if volume.size and (volume.min() < 0 or volume.max() >= num_classes):
        found = np.unique(volume)
        raise DataError(
            f"the {what} holds labels {found[(found < 0) | (found >= num_classes)].tolist()} outside "
            f"0 .. {num_classes - 1}; check num_classes and the label mapping of the data"
        )
    if volume.dtype.kind in "iu":
        return volume
    with np.errstate(invalid="ignore"):  # NaN casts to garbage, caught just below
        labels = volume.astype(np.uint8 if num_classes <= 256 else np.int32)
    if volume.dtype.kind == "f" and not np.array_equal(labels, volume):
        raise DataError(f"the {what} holds non-integer values; pass a label volume (the argmax of the scores)")
    return labels


def _union_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    if a is None or b is None:
        return a if b is None else b
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))

