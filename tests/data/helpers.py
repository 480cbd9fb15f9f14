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


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def fill_disk_after(monkeypatch, files: int) -> list[Path]:
    """A file-system stub: the data writers' atomic writes succeed ``files`` times, then fail with
    ENOSPC as on a full disk (the temporary file removed, the target untouched). Returns the
    list of the files written."""
    import errno
    from contextlib import contextmanager

    from msvmunet.data import io

    real, written = io.atomic_path, []

    @contextmanager
    def filling_up(path):
        with real(path) as tmp:
            yield tmp
            if len(written) == files:
                raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
            written.append(Path(path))

    monkeypatch.setattr(io, "atomic_path", filling_up)
    return written
