"""nnU-Net raw datasets with several channels (one file per modality)."""

import json

import numpy as np
import pytest

from msvmunet.data import check_dataset, open_dataset
from msvmunet.data.io import read_nifti
from msvmunet.errors import DataError

from .helpers import save_nifti
from .layouts import write_nifti_channels


def test_two_channels_are_read_stacked_and_normalised_each(tmp_path):
    write_nifti_channels(tmp_path)
    data = open_dataset(tmp_path)
    assert data.kind == "nifti" and data.preprocessing.channels == 2 and data.preprocessing.model_channels == 2
    assert data.preprocessing.normalization == "mr"
    volume = next(iter(data.volumes("train", cases=["brain002"])))
    assert volume.image.shape == (4, 2, 18, 20) and volume.label.shape == (4, 18, 20)
    for c in range(2):
        raw, affine = read_nifti(tmp_path / "imagesTr" / f"brain002_{c:04d}.nii.gz")
        np.testing.assert_allclose(volume.image[:, c], data.preprocessing.apply(raw, affine))
    item = data.slices("train", size=16)[1]
    assert item["image"].shape == (2, 16, 16)
    report = check_dataset(tmp_path)
    assert report.ok and report.channels == 2 and "2 image channel(s)" in report.format()


def test_a_missing_or_misshapen_channel_is_named(tmp_path):
    write_nifti_channels(tmp_path)
    (tmp_path / "imagesTr" / "brain003_0001.nii.gz").unlink()
    with pytest.raises(DataError, match="brain003_0001.nii.gz"):
        open_dataset(tmp_path).names("train")
    save_nifti(tmp_path / "imagesTr" / "brain003_0001.nii.gz", np.zeros((5, 5, 4), np.float32))
    report = check_dataset(tmp_path)
    assert len(report.problems) == 1 and "brain003_0001.nii.gz: shape (5, 5, 4)" in report.problems[0]


def test_channel_names_must_be_numbered(tmp_path):
    write_nifti_channels(tmp_path)
    meta = json.loads((tmp_path / "dataset.json").read_text())
    meta["channel_names"] = {"0": "T1", "2": "T2"}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="channel_names"):
        open_dataset(tmp_path)
