"""Segmentation metrics with medpy's definitions."""

from .binary import asd, binary_metrics, dice, hd95, jaccard, surface_distances

__all__ = ["asd", "binary_metrics", "dice", "hd95", "jaccard", "surface_distances"]
