"""Segmentation metrics (medpy's definitions) and the ``paper`` and ``strict`` evaluation protocols."""

from .binary import asd, binary_metrics, dice, hd95, jaccard, surface_distances
from .protocols import (
    METRICS,
    PROTOCOLS,
    Aggregator,
    ClassResult,
    ClassSummary,
    MetricSummary,
    Summary,
    check_protocol,
    class_metrics,
    evaluate_case,
)

__all__ = [
    "METRICS",
    "PROTOCOLS",
    "Aggregator",
    "ClassResult",
    "ClassSummary",
    "MetricSummary",
    "Summary",
    "asd",
    "binary_metrics",
    "check_protocol",
    "class_metrics",
    "dice",
    "evaluate_case",
    "hd95",
    "jaccard",
    "surface_distances",
]
