"""Safe readers and atomic writers for npz, h5, NIfTI and list files.

Every reader turns a missing, unreadable or truncated file into a :class:`DataError` that names
the file and says what to do; every writer writes a temporary file beside the target and
renames it, so an interrupted run never leaves a half-written file under the final name; a full
disk is reported in one line (:func:`reporting_disk_full`).
"""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .._files import atomic_path, atomic_write, atomic_write_text, is_disk_full
from ..errors import DataError, DiskFullError

PathLike = str | os.PathLike


# ----------------------------------------------------------------------------- readers


def read_npz(path: PathLike, keys: Sequence[str], optional: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The arrays ``keys`` (and those of ``optional`` that exist) of an ``.npz`` file, fully read."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the dataset folder or regenerate the list file")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in keys if k not in data.files]
            if missing:
                raise DataError(
                    f"{path}: missing key(s) {missing} (found {sorted(data.files)}); "
                    f"the file must hold the arrays {list(keys)}"
                )
            return {k: np.asarray(data[k]) for k in (*keys, *optional) if k in data.files}
    except DataError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise DataError(f"{path}: unreadable or truncated npz ({err}); delete it and prepare the data again") from err


def read_h5(path: PathLike, keys: Sequence[str]) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """The datasets ``keys`` of an HDF5 file, and the file's attributes."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the dataset folder or regenerate the list file")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in keys if k not in f]
            if missing:
                raise DataError(
                    f"{path}: missing dataset(s) {missing} (found {sorted(f.keys())}); "
                    f"the file must hold the datasets {list(keys)}"
                )
            arrays = {k: np.asarray(f[k][()]) for k in keys}
            attrs = {k: _plain(v) for k, v in f.attrs.items()}
        return arrays, attrs
    except DataError:
        raise
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"{path}: unreadable or truncated HDF5 file ({err}); delete it and prepare the data again") from err


def _plain(value: object) -> object:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value


def read_nifti(path: PathLike, with_header: bool = False):
    """A NIfTI volume as ``(array as nibabel reads it, float32 when scaled; affine (4, 4))``,
    and its header as a third item with ``with_header``."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the dataset folder")
    try:
        img = nib.load(str(path))
        array = np.asanyarray(img.dataobj)
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as err:  # nibabel raises many types for broken files
        raise DataError(f"{path}: unreadable or truncated NIfTI file ({type(err).__name__}: {err}); "
                        "download or export it again") from err
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise DataError(f"{path}: expected a 3-D volume, got shape {array.shape}; "
                        "split multi-channel or 4-D files into one 3-D file per channel/frame")
    return (array, affine, img.header) if with_header else (array, affine)


def nifti_shape(path: PathLike) -> tuple[int, ...]:
    """The shape of a NIfTI volume, read from its header only."""
    import nibabel as nib

    try:
        return tuple(int(s) for s in nib.load(str(path)).shape)
    except Exception as err:
        raise DataError(f"{path}: unreadable NIfTI header ({err}); download or export it again") from err


def read_list(path: PathLike) -> list[str]:
    """The names in a list file: one per line; blank lines and ``#`` comments are skipped."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise DataError(f"{path}: cannot read the list file ({err})") from err
    names = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    if not names:
        raise DataError(f"{path}: the list file is empty; list one file name per line or delete it "
                        "so that the folder is listed instead")
    return names


# ----------------------------------------------------------------------------- checks


def check_image(image: np.ndarray, where: str) -> np.ndarray:
    """``image`` as float32, after checking it holds no NaN or inf."""
    image = np.asarray(image, dtype=np.float32)
    if not np.isfinite(image).all():
        bad = int((~np.isfinite(image)).sum())
        raise DataError(f"{where}: the image holds {bad} NaN/inf value(s); fix or exclude this file")
    return image


def check_label(label: np.ndarray, num_classes: int | None, where: str) -> np.ndarray:
    """``label`` as int64, after checking its values are whole numbers in ``0..num_classes-1``."""
    label = np.asarray(label)
    if label.dtype.kind == "f":
        if not np.isfinite(label).all():
            raise DataError(f"{where}: the label holds NaN/inf values; labels must be class indices")
        if (label != np.round(label)).any():
            raise DataError(f"{where}: the label holds fractional values; labels must be whole class indices "
                            "(was it resampled with linear interpolation? use nearest)")
    elif label.dtype.kind not in "biu":
        raise DataError(f"{where}: the label has dtype {label.dtype}; labels must be integer class indices")
    label = label.astype(np.int64)
    if label.size:
        lo, hi = int(label.min()), int(label.max())
        if lo < 0 or (num_classes is not None and hi >= num_classes):
            raise DataError(f"{where}: label values span {lo}..{hi}, outside 0..{(num_classes or 1) - 1}; "
                            "remap the labels or set the right number of classes")
    return label


def check_same_shape(image: np.ndarray, label: np.ndarray, where: str) -> None:
    if image.shape != label.shape:
        raise DataError(f"{where}: image shape {image.shape} and label shape {label.shape} differ; "
                        "they must hold the same voxels")


# ----------------------------------------------------------------------------- atomic writers


def write_npz(path: PathLike, **arrays: np.ndarray) -> None:
    """Write arrays into an uncompressed ``.npz`` atomically, as ``np.savez`` does (TransUNet's
    format; the readers take compressed files too), with a fixed time stamp inside the zip, so
    that the same arrays always give the same bytes."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)


def write_h5(path: PathLike, arrays: dict[str, np.ndarray], attrs: dict[str, object] | None = None) -> None:
    """Write datasets (gzip-compressed) and attributes into an HDF5 file atomically."""
    import h5py

    # built in memory, then written as bytes: HDF5 closing a file on a full disk crashes the process
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value, compression="gzip", compression_opts=4)
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    atomic_write(path, lambda out: out.write(buffer.getbuffer()), buffer.getbuffer().nbytes)


def write_nifti(path: PathLike, array: np.ndarray, affine: np.ndarray, header=None) -> None:
    """Write a NIfTI volume atomically; ``header`` (e.g. the scan's) is copied, with the array's dtype."""
    import nibabel as nib

    if header is not None:
        header = header.copy()
        header.set_data_dtype(array.dtype)
        header.set_slope_inter(1.0, 0.0)
    with atomic_path(path) as tmp:
        nib.save(nib.Nifti1Image(array, affine, header=header), str(tmp))


def write_text(path: PathLike, text: str) -> None:
    """Write a text file atomically."""
    atomic_write_text(path, text)


# ----------------------------------------------------------------------------- full disk


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


@contextmanager
def reporting_disk_full(folder: PathLike, needed: Callable[[], int]) -> Iterator[None]:
    """Turn a full disk in the block (a writer's :class:`DiskFullError`, or any write that failed for
    want of space) into one :class:`DiskFullError` line naming ``folder``, its free space and
    ``needed()``, the bytes the unfinished work still needs."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        if not is_disk_full(err, folder):
            raise
        folder = Path(folder)
        existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
        free = shutil.disk_usage(existing).free
        raise DiskFullError(f"{folder}: the disk is full ({format_bytes(free)} free, about "
                            f"{format_bytes(needed())} more needed); free some space or choose another output "
                            "folder and run the same command again (the files already written are kept)") from err
