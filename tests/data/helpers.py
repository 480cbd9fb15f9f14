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


def write_dicom_series(folder: Path, stored: np.ndarray, *, origin=(-80.0, -95.5, 30.0), row_cos=(1.0, 0.0, 0.0),
                       col_cos=(0.0, 1.0, 0.0), spacing=(0.75, 0.6), gap=2.5, slope=1.0, intercept=-1024.0,
                       series_uid: str | None = None, skip=(), seed: int = 0) -> list[Path]:
    """Write ``stored`` (slices, rows, columns) int16 as a CT series, one file per slice, under shuffled
    names: slice k lies at ``origin + k * gap * (row_cos x col_cos)``; ``spacing`` is PixelSpacing
    (between rows, between columns). Slices in ``skip`` are not written."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    normal = np.cross(row_cos, col_cos)
    series_uid = series_uid or generate_uid()
    study_uid, frame_uid = generate_uid(), generate_uid()
    order = np.random.default_rng(seed).permutation(len(stored))
    paths = []
    for k in range(len(stored)):
        if k in skip:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study_uid, series_uid, "CT"
        ds.FrameOfReferenceUID, ds.SeriesNumber, ds.StudyID, ds.AccessionNumber = frame_uid, 1, "1", ""
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Test", "P1", "", "O"
        ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName, ds.Manufacturer = "20260101", "120000", "", "test"
        ds.InstanceNumber = len(stored) - k  # reversed: the reader must order by position
        ds.Rows, ds.Columns = stored.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelSpacing = [f"{s:g}" for s in spacing]
        ds.ImageOrientationPatient = [f"{c:.6f}" for c in (*row_cos, *col_cos)]
        ds.ImagePositionPatient = [f"{p:.4f}" for p in np.asarray(origin) + k * gap * normal]
        ds.SliceThickness = f"{gap:g}"
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
        ds.PixelData = np.ascontiguousarray(stored[k], dtype="<i2").tobytes()
        path = folder / f"IM{order[k]:04d}.{meta.MediaStorageSOPInstanceUID[-6:]}"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def dicom_world(index, *, origin, row_cos, col_cos, spacing, gap) -> np.ndarray:
    """RAS position (mm) of voxel (i, j, k) = (column, row, slice), from DICOM's equation (PS3.3 C.7.6.2.1.1)."""
    i, j, k = index
    lps = (np.asarray(origin) + i * spacing[1] * np.asarray(row_cos) + j * spacing[0] * np.asarray(col_cos)
           + k * gap * np.cross(row_cos, col_cos))
    return lps * np.array([-1.0, -1.0, 1.0])
