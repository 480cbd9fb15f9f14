"""ACDC in the SSL4MIS layout, read from real h5 files."""

import h5py
import numpy as np
import pytest

from msvmunet.data import check_dataset, detect_format, open_dataset
from msvmunet.errors import DataError

from .layouts import write_ssl4mis


@pytest.mark.parametrize("slices_in_data", [False, True], ids=["data-slices", "data"])
def test_splits_slices_and_volumes_are_the_files(tmp_path, slices_in_data):
    lists = write_ssl4mis(tmp_path, slices_in_data=slices_in_data)
    assert detect_format(tmp_path) == "ssl4mis"
    data = open_dataset(tmp_path)
    assert data.splits == ("train", "val", "test") and data.class_names == ("background", "RV", "Myo", "LV")
    assert data.cases("train") == [f"patient{p:03d}" for p in range(1, 8)]
    assert data.cases("val") == ["patient008"] and data.cases("test") == ["patient009", "patient010"]
    assert data.split_problems() == []
    names = data.names("train")
    assert len(names) == 7 * 2 * 4 and names[0] == "patient001_frame01_slice_0"
    folder = tmp_path / "data" / ("" if slices_in_data else "slices")
    image, label, _ = data.read("train", "patient002_frame07_slice_1")
    with h5py.File(folder / "patient002_frame07_slice_1.h5") as f:
        np.testing.assert_array_equal(image, f["image"][()])
        np.testing.assert_array_equal(label, f["label"][()])
    ds = data.slices("train", size=8, cases=["patient002"])
    assert len(ds) == 8 and {ds[i]["case"] for i in range(len(ds))} == {"patient002"}
    assert ds[0]["image"].shape == (1, 8, 8) and ds[0]["label"].shape == (8, 8)
    test = list(data.volumes("test"))
    assert [v.case for v in test] == lists["test"] and all(v.spacing is None for v in test)
    with h5py.File(tmp_path / "data" / f"{lists['test'][1]}.h5") as f:
        np.testing.assert_array_equal(test[1].image, f["image"][()])
        np.testing.assert_array_equal(test[1].label, f["label"][()])
    # train volumes are the slices stacked back, equal to the volume files
    stacked = next(iter(data.volumes("train", cases=["patient003"])))
    with h5py.File(tmp_path / "data" / f"{stacked.case}.h5") as f:
        np.testing.assert_array_equal(stacked.image, f["image"][()])
    assert [v.case for v in data.volumes("val")] == lists["val"]
    text = check_dataset(tmp_path).format()
    assert "train: 56/56 readable and valid (7 cases); shapes 20x24" in text
    assert "test: 4/4 readable and valid (2 cases); shapes 4x20x24" in text and "in voxels" in text


def test_shared_patients_and_missing_files_are_named(tmp_path):
    lists = write_ssl4mis(tmp_path)
    (tmp_path / "val.list").write_text("\n".join(lists["val"] + ["patient001_frame01"]) + "\n")
    data = open_dataset(tmp_path)
    problems = data.split_problems()
    assert len(problems) == 1 and "train and val" in problems[0] and "patient001" in problems[0]
    with pytest.raises(DataError, match="patient001"):
        data.slices("train")
    (tmp_path / "val.list").write_text("\n".join(lists["val"]) + "\n")
    (tmp_path / "data" / f"{lists['test'][0]}.h5").unlink()
    report = check_dataset(tmp_path)
    assert not report.ok and len(report.problems) == 1
    assert "test.list" in report.problems[0] and lists["test"][0] in report.problems[0]
    assert "\n" not in report.problems[0]
