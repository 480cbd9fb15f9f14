"""Segmentation metrics (medpy's definitions), the ``paper`` and ``strict`` protocols, and report files.

>>> from msvmunet.metrics import Aggregator, SYNAPSE, write_report
>>> agg = Aggregator(SYNAPSE.names, protocol="strict")
>>> agg.add_case("case0001", pred, gt, spacing=(3.0, 0.78, 0.78))   # (Z, Y, X) label volumes
>>> print(format_summary(agg.summary()))
>>> write_report("results/", agg, selection="last epoch")

The plotting function ``save_dice_boxplot`` needs matplotlib (``pip install "msvm-unet[viz]"``).
"""

from .binary import asd, binary_metrics, dice, hd95, jaccard, surface_distances
from .figures import (
    colorize_labels,
    overlay_image,
    overlay_panels,
    pick_slices,
    save_case_overlays,
    save_dice_boxplot,
    save_overlay,
)
from .labels import ACDC, SYNAPSE, LabelSet, colors_for, default_colors
from .pooled import POOLED_METRICS, PooledConfusion, confusion_matrix, format_pooled, scores, write_pooled_report
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
from .report import (
    format_summary,
    summary_to_dict,
    write_case_csv,
    write_report,
    write_summary_json,
    write_summary_markdown,
)

__all__ = [
    "ACDC",
    "METRICS",
    "POOLED_METRICS",
    "PROTOCOLS",
    "PooledConfusion",
    "SYNAPSE",
    "Aggregator",
    "ClassResult",
    "ClassSummary",
    "LabelSet",
    "MetricSummary",
    "Summary",
    "asd",
    "binary_metrics",
    "check_protocol",
    "class_metrics",
    "colorize_labels",
    "colors_for",
    "confusion_matrix",
    "default_colors",
    "dice",
    "evaluate_case",
    "format_pooled",
    "format_summary",
    "hd95",
    "jaccard",
    "overlay_image",
    "overlay_panels",
    "pick_slices",
    "save_case_overlays",
    "save_dice_boxplot",
    "save_overlay",
    "scores",
    "summary_to_dict",
    "surface_distances",
    "write_case_csv",
    "write_pooled_report",
    "write_report",
    "write_summary_json",
    "write_summary_markdown",
]
