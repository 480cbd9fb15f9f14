"""Small real files for the data tests: a tiny phantom, BTCV-like and ACDC-like raw scans."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from msvmunet.data import make_phantom

from .helpers import btcv_case, save_nifti


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """6 cases (4 train, 2 test) of 32 x 32 x 8, plus the nnU-Net layout."""
    out = tmp_path_factory.mktemp("phantom")
    make_phantom(out, cases=6, test_cases=2, seed=3, size=32, slices=8, nnunet=True)
    return out


@pytest.fixture
def btcv_raw(tmp_path) -> Path:
    """BTCV ``RawData/Training`` with cases 1, 2 (test) and 5, 6 (train)."""
    raw = tmp_path / "Training"
    for index in (1, 2, 5, 6):
        hu, label = btcv_case(index)
        save_nifti(raw / "img" / f"img{index:04d}.nii.gz", hu, zooms=(0.8, 0.7, 3.0 + index))
        save_nifti(raw / "label" / f"label{index:04d}.nii.gz", label, zooms=(0.8, 0.7, 3.0 + index))
    return raw


@pytest.fixture
def acdc_raw(tmp_path) -> Path:
    """10 ACDC-like patients in two pathology groups, ED = frame 1, ES = frame 7 (or 3)."""
    raw = tmp_path / "training"
    for number in range(1, 11):
        folder = raw / f"patient{number:03d}"
        es = 7 if number % 2 else 3
        group = "DCM" if number <= 5 else "NOR"
        folder.mkdir(parents=True)
        (folder / "Info.cfg").write_text(f"ED: 1\nES: {es}\nGroup: {group}\nHeight: 180\n")
        rng = np.random.default_rng(number)
        for frame in (1, es):
            image = rng.uniform(0, 500, size=(9, 8, 3)).astype(np.float32)
            label = rng.integers(0, 4, size=(9, 8, 3)).astype(np.uint8)
            stem = f"patient{number:03d}_frame{frame:02d}"
            save_nifti(folder / f"{stem}.nii.gz", image, zooms=(1.5, 1.5, 10.0))
            save_nifti(folder / f"{stem}_gt.nii.gz", label, zooms=(1.5, 1.5, 10.0))
    return raw
