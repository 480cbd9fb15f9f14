"""Read one DICOM series (a folder of single-slice files) as a volume in nibabel order with its affine.

    volume, affine = read_dicom_series("CT_series/")   # (columns, rows, slices) float32, RAS affine (4, 4)

Slices are ordered by their position along the slice normal (ImagePositionPatient projected on the
cross product of the ImageOrientationPatient cosines); RescaleSlope/Intercept are applied. DICOM's
patient frame is LPS; NIfTI's (as nibabel reads it) is RAS, so the affine's first two rows are negated.
Array axis i runs along the rows (DICOM column index), j down the columns (row index), k over slices.
Needs pydicom (``pip install "msvm-unet[dicom]"``); :func:`write_dicom_seg` writes labels back as a
DICOM-SEG with highdicom (``pip install "msvm-unet[dicomseg]"``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError

PathLike = str | os.PathLike
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
ORIENTATION_TOLERANCE = 1e-4  # direction cosines
SPACING_TOLERANCE = 0.01  # relative deviation of one slice gap from the median gap


def _pydicom():
    try:
        import pydicom
    except ImportError as err:
        hint = 'pip install "msvm-unet[dicom]" (or pip install pydicom)'
        raise ConfigError(f"reading DICOM needs pydicom: {hint}") from err
    return pydicom


def _looks_like_dicom(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_folder(path: PathLike) -> bool:
    """Whether ``path`` is a folder holding DICOM files (a ``.dcm`` ending or the DICM preamble)."""
    path = Path(path)
    return path.is_dir() and any(p.is_file() and _looks_like_dicom(p) for p in path.iterdir())


def read_dicom_series(folder: PathLike, *, with_datasets: bool = False):
    """A folder holding one DICOM series -> (volume (columns, rows, slices) float32, RAS affine (4, 4)),
    and with ``with_datasets`` the slices' pydicom datasets in the volume's slice order as a third item.

    Several series, missing slices (uneven gaps), repeated positions and mixed orientations or
    pixel spacings are errors: one line naming the folder.
    """
    pydicom = _pydicom()
    folder = Path(folder)
    datasets = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and _looks_like_dicom(p)):
        try:
            ds = pydicom.dcmread(path)
        except Exception as err:  # pydicom raises many types for broken files
            raise DataError(f"{path}: unreadable DICOM file ({type(err).__name__}: {err})") from err
        if "PixelData" in ds:
            datasets.append((path, ds))
    if not datasets:
        raise DataError(f"{folder}: no DICOM images (files with pixel data) found")
    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in datasets}
    if len(series) > 1:
        raise DataError(f"{folder}: holds {len(series)} DICOM series; put each series in its own folder")
    for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        missing = [p.name for p, ds in datasets if tag not in ds]
        if missing:
            raise DataError(f"{folder}: {missing[0]} (and {len(missing) - 1} more) has no {tag}; "
                            "the series geometry is unknown")

    cosines = np.array([[float(v) for v in ds.ImageOrientationPatient] for _, ds in datasets])
    spacings = np.array([[float(v) for v in ds.PixelSpacing] for _, ds in datasets])
    if np.abs(cosines - cosines[0]).max() > ORIENTATION_TOLERANCE:
        raise DataError(f"{folder}: the slices have different orientations (ImageOrientationPatient); "
                        "one series must have one orientation")
    if np.abs(spacings - spacings[0]).max() > 1e-4 * spacings[0].max():
        raise DataError(f"{folder}: the slices have different pixel spacings; one series must have one")
    row_cos, col_cos = cosines[0, :3], cosines[0, 3:]
    normal = np.cross(row_cos, col_cos)
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for _, ds in datasets])
    order = np.argsort(positions @ normal, kind="stable")
    datasets = [datasets[i] for i in order]
    positions = positions[order]
    step = _slice_step(folder, positions, normal, datasets)

    slices = [_pixels(path, ds) for path, ds in datasets]
    if len({s.shape for s in slices}) > 1:
        raise DataError(f"{folder}: the slices have different sizes {sorted({s.shape for s in slices})}; "
                        "one series must have one size")
    volume = np.stack([s.T for s in slices], axis=-1)
    row_spacing, col_spacing = spacings[0]  # PixelSpacing: between rows, between columns
    lps = np.eye(4)
    lps[:3, 0] = row_cos * col_spacing
    lps[:3, 1] = col_cos * row_spacing
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    affine = LPS_TO_RAS @ lps
    return (volume, affine, [ds for _, ds in datasets]) if with_datasets else (volume, affine)


def _slice_step(folder: Path, positions: np.ndarray, normal: np.ndarray, datasets) -> np.ndarray:
    """The LPS vector from one slice to the next, after checking the gaps are even."""
    if len(positions) == 1:
        ds = datasets[0][1]
        thickness = float(ds.get("SpacingBetweenSlices", 0) or ds.get("SliceThickness", 0) or 1.0)
        return normal * thickness
    gaps = np.diff(positions @ normal)
    if (gaps <= 1e-6).any():
        raise DataError(f"{folder}: {int((gaps <= 1e-6).sum()) + 1} slices share a position; "
                        "remove the duplicates (or split the series)")
    median = float(np.median(gaps))
    uneven = np.abs(gaps - median) > SPACING_TOLERANCE * median
    if uneven.any():
        k = int(np.argmax(uneven))
        raise DataError(f"{folder}: uneven slice gaps ({gaps[k]:.3g} mm after slice {k + 1}, {median:.3g} mm "
                        "elsewhere): slices are missing; export the complete series")
    return (positions[-1] - positions[0]) / (len(positions) - 1)


def _pixels(path: Path, ds) -> np.ndarray:
    """One slice's stored values -> (rows, columns) float32 with RescaleSlope/Intercept applied."""
    try:
        pixels = ds.pixel_array
    except Exception as err:
        raise DataError(f"{path}: cannot decode the pixel data ({type(err).__name__}: {err}); "
                        "compressed transfer syntaxes may need pylibjpeg or gdcm") from err
    if pixels.ndim != 2:
        raise DataError(f"{path}: expected one grey slice per file, got pixel data of shape {pixels.shape}")
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def nifti_header(affine: np.ndarray):
    """A NIfTI header for labels of a DICOM series: qform and sform both the series' geometry, code 'scanner'."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_qform(affine, code="scanner")
    header.set_sform(affine, code="scanner")
    header.set_xyzt_units("mm")
    return header


def write_dicom_seg(path: PathLike, label: np.ndarray, source: list, class_names: list[str] | tuple[str, ...],
                    version: str) -> None:
    """Write a DICOM-SEG (binary segments, one per foreground class present) that references ``source``,
    the series' datasets in slice order; label: (columns, rows, slices) as :func:`read_dicom_series`.
    Needs highdicom (``pip install "msvm-unet[dicomseg]"``)."""
    try:
        import highdicom as hd
        from pydicom.sr.codedict import codes
    except ImportError as err:
        hint = 'pip install "msvm-unet[dicomseg]" (or pip install highdicom)'
        raise ConfigError(f"writing DICOM-SEG needs highdicom: {hint}") from err
    from .._files import atomic_path

    frames = np.ascontiguousarray(label.transpose(2, 1, 0))  # (slices, rows, columns), as the source frames
    present = [c for c in range(1, len(class_names)) if (frames == c).any()]
    if not present:
        raise DataError(f"{path}: nothing was segmented, and a DICOM-SEG needs at least one segment; "
                        "the NIfTI labels are written")
    algorithm = hd.AlgorithmIdentificationSequence(name="MSVM-UNet", version=version,
                                                   family=codes.cid7162.ArtificialIntelligence)
    segments = [hd.seg.SegmentDescription(
        segment_number=n, segment_label=class_names[c], segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=codes.SCT.Organ, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm) for n, c in enumerate(present, start=1)]
    numbered = np.zeros(frames.shape, np.uint8 if len(present) < 256 else np.uint16)
    for n, c in enumerate(present, start=1):
        numbered[frames == c] = n  # segment numbers are 1..K over the classes present
    try:
        seg = hd.seg.Segmentation(
            source_images=source, pixel_array=numbered, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=segments, series_instance_uid=hd.UID(), series_number=9001,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="msvmunet",
            manufacturer_model_name="MSVM-UNet", software_versions=version, device_serial_number="none",
            series_description="MSVM-UNet segmentation", omit_empty_frames=False)
    except (ValueError, AttributeError, TypeError) as err:
        raise DataError(f"{path}: cannot build a DICOM-SEG for this series ({err}); the NIfTI labels are written")
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
