"""DICOM series written with pydicom: slice order, rescale, geometry -> RAS affine, one-line errors."""

from __future__ import annotations

import sys

import nibabel as nib
import numpy as np
import pytest

from msvmunet import ConfigError, DataError

from msvmunet.data.dicom import is_dicom_folder, read_dicom_series

from .helpers import dicom_world, write_dicom_series

pytest.importorskip("pydicom", minversion="3.0", reason="the DICOM tests write series with pydicom >= 3")

COS30, SIN30 = np.cos(np.pi / 6), np.sin(np.pi / 6)
COS20, SIN20 = np.cos(np.pi / 9), np.sin(np.pi / 9)
GEOMETRIES = {
    # name: (row_cos, col_cos, axis codes nibabel must report)
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), ("L", "P", "S")),
    "coronal_flipped": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0), ("L", "I", "P")),
    "mirrored_axial": ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), ("R", "P", "I")),
    "oblique": ((COS30, SIN30, 0.0), (-SIN30 * COS20, COS30 * COS20, SIN20), ("L", "P", "S")),
}


def _stored(shape=(6, 7, 5), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-200, 1800, size=shape).astype(np.int16)


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_series_geometry_and_values(tmp_path, name):
    row_cos, col_cos, codes = GEOMETRIES[name]
    geometry = dict(origin=(-80.0, -95.5, 30.0), row_cos=row_cos, col_cos=col_cos, spacing=(0.75, 0.6), gap=2.5)
    stored = _stored()
    write_dicom_series(tmp_path / "s", stored, slope=2.0, intercept=-1024.0, **geometry)
    assert is_dicom_folder(tmp_path / "s")
    volume, affine = read_dicom_series(tmp_path / "s")
    # values: (columns, rows, slices), rescaled, in the slices' spatial order
    assert volume.shape == (5, 7, 6) and volume.dtype == np.float32
    assert np.array_equal(volume, stored.transpose(2, 1, 0).astype(np.float32) * 2.0 - 1024.0)
    for index in ((0, 0, 0), (4, 0, 0), (0, 6, 0), (0, 0, 5), (3, 2, 4)):
        assert np.allclose(affine @ [*index, 1.0], [*dicom_world(index, **geometry), 1.0], atol=1e-3), index
    assert nib.aff2axcodes(affine) == codes


def test_empty_or_foreign_folders(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert not is_dicom_folder(tmp_path)
    (tmp_path / "x.dcm").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"x\.dcm: unreadable DICOM file"):
        read_dicom_series(tmp_path)


def test_one_line_errors(tmp_path):
    stored = _stored()
    write_dicom_series(tmp_path / "two", stored[:3], seed=1)
    write_dicom_series(tmp_path / "two", stored[3:], origin=(0, 0, 100), seed=2)  # a second SeriesInstanceUID
    with pytest.raises(DataError, match="holds 2 DICOM series; put each series in its own folder"):
        read_dicom_series(tmp_path / "two")

    write_dicom_series(tmp_path / "gap", stored, skip=(3,))
    with pytest.raises(DataError, match=r"uneven slice gaps \(5 mm after slice 3, 2.5 mm elsewhere\): slices are"):
        read_dicom_series(tmp_path / "gap")

    uid = "1.2.3.4.5"
    write_dicom_series(tmp_path / "mixed", stored[:4], series_uid=uid, seed=3)
    write_dicom_series(tmp_path / "mixed", stored[4:], series_uid=uid, row_cos=(COS30, SIN30, 0.0),
                       col_cos=(-SIN30, COS30, 0.0), origin=(0, 0, 60), seed=4)
    with pytest.raises(DataError, match="different orientations"):
        read_dicom_series(tmp_path / "mixed")
    for folder in ("two", "gap", "mixed"):
        with pytest.raises(DataError) as info:
            read_dicom_series(tmp_path / folder)
        assert "\n" not in str(info.value) and folder in str(info.value)


def test_missing_pydicom_is_a_clear_error(tmp_path, monkeypatch):
    write_dicom_series(tmp_path / "s", _stored())
    monkeypatch.setitem(sys.modules, "pydicom", None)  # what an environment without pydicom imports
    with pytest.raises(ConfigError, match=r'pip install "msvm-unet\[dicom\]"'):
        read_dicom_series(tmp_path / "s")
