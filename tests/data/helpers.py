"""Helpers that write small raw scans for the data tests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np


def save_nifti(path: Path, array: np.ndarray, zooms=(0.8, 0.7, 3.0)) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*zooms, 1.0])
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return affine


def btcv_case(index: int, shape=(12, 10, 5)) -> tuple[np.ndarray, np.ndarray]:
    """A raw BTCV-like pair in nibabel order (X, Y, Z): HU ramp and labels 0..13 at known voxels."""
    rng = np.random.default_rng(index)
    hu = rng.uniform(-1000, 1000, size=shape).astype(np.int16)
    hu[0, 0, 0], hu[1, 0, 0], hu[2, 0, 0] = -125, 275, 75
    label = np.zeros(shape, dtype=np.uint8)
    label[3, 2, 1] = 8      # aorta -> 1
    label[4, 2, 1] = 11     # pancreas -> 6
    label[5, 2, 1] = 1      # spleen -> 7
    label[6, 2, 1] = 12     # an organ Synapse drops -> 0
    label[7, 3, 4] = 6      # liver -> 5
    return hu, label
