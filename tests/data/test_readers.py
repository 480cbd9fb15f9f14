import json
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from msvmunet.data import (ACDCData, NiftiData, SynapseData, detect_format, open_dataset, split_cases)
from msvmunet.data.io import write_h5, write_npz
from msvmunet.errors import DataError

from .helpers import save_nifti


def test_synapse_slices_are_fixed_size_and_batch(phantom_dir):
    data = open_dataset(phantom_dir)
    assert isinstance(data, SynapseData) and data.num_classes == 9
    assert data.cases("train") == ["case0001", "case0002", "case0003", "case0004"]
    ds = data.slices("train", size=24)
    assert len(ds) == 4 * 8
    item = ds[3]
    assert item["image"].shape == (1, 24, 24) and item["image"].dtype == torch.float32
    assert item["label"].shape == (24, 24) and item["label"].dtype == torch.int64
    assert item["case"] == "case0001" and item["name"] == "case0001_slice003"
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    batch = next(iter(DataLoader(ds, batch_size=5)))
    assert batch["image"].shape == (5, 1, 24, 24) and batch["label"].shape == (5, 24, 24)


def test_synapse_native_size_keeps_the_file_exactly(phantom_dir):
    data = open_dataset(phantom_dir)
    raw = np.load(phantom_dir / "train_npz" / "case0002_slice005.npz")
    item = data.slices("train", size=32, cases=["case0002"])[5]
    np.testing.assert_array_equal(item["image"][0].numpy(), raw["image"])
    np.testing.assert_array_equal(item["label"].numpy(), raw["label"])


def test_synapse_volumes_with_spacing_and_assembled_train_volumes(phantom_dir):
    data = open_dataset(phantom_dir)
    test = list(data.volumes("test"))
    assert [v.case for v in test] == ["case0005", "case0006"]
    assert test[0].image.shape == (8, 32, 32) and test[0].label.dtype == np.int64
    assert test[0].spacing == pytest.approx((2.5 * 48 / 8, 400 / 32, 400 / 32))
    (vol,) = data.volumes("train", cases=["case0003"])
    raw = np.load(phantom_dir / "train_npz" / "case0003_slice006.npz")
    np.testing.assert_array_equal(vol.image[6], raw["image"])
    assert vol.spacing is None


def test_synapse_official_folder_names_without_lists(phantom_dir, tmp_path):
    root = tmp_path / "synapse"
    shutil.copytree(phantom_dir / "train_npz", root / "train_slice")
    shutil.copytree(phantom_dir / "test_vol_h5", root / "test_vol")
    data = open_dataset(root)
    assert data.kind == "synapse" and len(data.names("train")) == 32
    assert data.names("test") == ["case0005", "case0006"]


def test_split_cases_exact_and_seeded():
    cases = [f"case{i:04d}" for i in range(1, 11)]
    train, val = split_cases(cases, ["case0003", "case0007"])
    assert val == ["case0003", "case0007"] and len(train) == 8 and "case0003" not in train
    a, b = split_cases(cases, 3, seed=1), split_cases(cases, 3, seed=1)
    assert a == b and len(a[1]) == 3 and set(a[0]) | set(a[1]) == set(cases)
    assert split_cases(cases, 0.2, seed=0)[1].__len__() == 2
    assert split_cases(cases, "case0001,case0002")[1] == ["case0001", "case0002"]
    with pytest.raises(DataError, match="case0099"):
        split_cases(cases, ["case0099"])


def test_excluding_held_out_cases(phantom_dir):
    data = open_dataset(phantom_dir)
    ds = data.slices("train", exclude_cases=["case0001"], size=16)
    assert len(ds) == 24 and {ds[i]["case"] for i in range(len(ds))} == {"case0002", "case0003", "case0004"}
    with pytest.raises(DataError, match="case0042"):
        data.slices("train", cases=["case0042"])


@pytest.fixture
def acdc_dir(tmp_path):
    root = tmp_path / "ACDC"
    rng = np.random.default_rng(0)
    for split, cases in (("train", (1, 2)), ("valid", (3,))):
        for case in cases:
            for k in range(3):
                img = rng.random((12, 10)).astype(np.float32)
                lab = rng.integers(0, 4, (12, 10)).astype(np.float32)
                write_npz(root / split / f"case_{case:03d}_sliceED_{k}.npz", img=img, label=lab)
    write_npz(root / "test" / "case_004_volume_ED.npz", img=rng.random((3, 12, 10)).astype(np.float32),
              label=rng.integers(0, 4, (3, 12, 10)).astype(np.float32))
    (root / "lists_ACDC").mkdir()
    (root / "lists_ACDC" / "train.txt").write_text("case_001_sliceED_0.npz\ncase_001_sliceED_1.npz\n"
                                                   "case_002_sliceED_2.npz\n")
    return root


def test_acdc_reader(acdc_dir):
    data = open_dataset(acdc_dir)
    assert isinstance(data, ACDCData) and data.num_classes == 4
    assert data.names("train") == ["case_001_sliceED_0", "case_001_sliceED_1", "case_002_sliceED_2"]
    assert data.cases("valid") == ["case_003"]
    item = data.slices("valid", size=16)[1]
    assert item["image"].shape == (1, 16, 16) and item["case"] == "case_003"
    (test,) = data.volumes("test")
    assert test.case == "case_004_ED" and test.image.shape == (3, 12, 10) and test.spacing is None
    (valid,) = data.volumes("valid")
    raw = np.load(acdc_dir / "valid" / "case_003_sliceED_2.npz")
    assert valid.case == "case_003_ED" and valid.image.shape == (3, 12, 10)
    np.testing.assert_array_equal(valid.label[2], raw["label"])


def test_nifti_reader(phantom_dir):
    root = phantom_dir / "nnunet"
    assert detect_format(root) == "nifti"
    data = open_dataset(root)
    assert isinstance(data, NiftiData) and data.preprocessing.normalization == "ct"
    assert data.class_names[1] == "aorta" and len(data.cases()) == 4 and data.cases("test") == ["case0005", "case0006"]
    (vol,) = data.volumes("test", cases=["case0005"])
    synapse = next(open_dataset(phantom_dir).volumes("test", cases=["case0005"]))
    # The nnU-Net copy stores HU as int16: the same image to within the rounding of 1 HU.
    np.testing.assert_allclose(vol.image, synapse.image, atol=0.5 / 400 + 1e-6)
    np.testing.assert_array_equal(vol.label, synapse.label)
    assert vol.spacing == pytest.approx(synapse.spacing)
    ds = data.slices(cases=["case0001", "case0002"], size=16)
    assert len(ds) == 16 and ds[9]["case"] == "case0002" and ds[9]["image"].shape == (1, 16, 16)


def test_nifti_v1_labels_and_axis(tmp_path):
    root = tmp_path / "Dataset"
    save_nifti(root / "imagesTr" / "a_0000.nii.gz", np.zeros((6, 5, 4), np.float32))
    save_nifti(root / "labelsTr" / "a.nii.gz", np.ones((6, 5, 4), np.uint8))
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "tumour"},
                                                   "modality": {"0": "MRI"}}))
    data = NiftiData(root)
    assert data.class_names == ("background", "tumour") and data.preprocessing.normalization == "mr"
    from msvmunet.data import Preprocessing
    data = NiftiData(root, Preprocessing(normalization="mr", axis=0))
    assert len(data.slices(size=8)) == 6


def test_bad_inputs_are_named(tmp_path, phantom_dir):
    root = tmp_path / "bad"
    shutil.copytree(phantom_dir, root, ignore=shutil.ignore_patterns("nnunet"))
    bad = root / "train_npz"
    # label out of range, shape mismatch, NaN image, truncated file
    write_npz(bad / "case0001_slice000.npz", image=np.zeros((32, 32), np.float32),
              label=np.full((32, 32), 9, np.uint8))
    write_npz(bad / "case0001_slice001.npz", image=np.zeros((32, 32), np.float32), label=np.zeros((30, 32)))
    write_npz(bad / "case0001_slice002.npz", image=np.full((32, 32), np.nan, np.float32),
              label=np.zeros((32, 32)))
    data = (bad / "case0001_slice003.npz").read_bytes()
    (bad / "case0001_slice003.npz").write_bytes(data[: len(data) // 2])
    write_npz(bad / "case0001_slice004.npz", img=np.zeros((32, 32), np.float32), label=np.zeros((32, 32)))
    ds = open_dataset(root).slices("train", size=32)
    for index, pattern in ((0, "0..8"), (1, "shape"), (2, "NaN"), (3, "truncated"), (4, "missing key")):
        with pytest.raises(DataError, match=pattern) as err:
            ds[index]
        assert f"case0001_slice00{index}.npz" in str(err.value)
    # truncated h5
    h5 = root / "test_vol_h5" / "case0005.npy.h5"
    h5.write_bytes(h5.read_bytes()[:100])
    with pytest.raises(DataError, match="case0005.npy.h5"):
        list(open_dataset(root).volumes("test"))
    # list names without a file, empty list
    (root / "lists" / "train.txt").write_text("case0001_slice000\ncase0404_slice000\n")
    with pytest.raises(DataError, match="case0404_slice000"):
        open_dataset(root).slices("train")
    (root / "lists" / "train.txt").write_text("\n")
    with pytest.raises(DataError, match="empty"):
        open_dataset(root).slices("train")


def test_bad_nifti_inputs(tmp_path):
    root = tmp_path / "Dataset"
    save_nifti(root / "imagesTr" / "a_0000.nii.gz", np.zeros((6, 5, 4), np.float32))
    save_nifti(root / "labelsTr" / "a.nii.gz", np.full((6, 5, 4), 3, np.uint8))
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "x": 1},
                                                   "channel_names": {"0": "CT"}}))
    with pytest.raises(DataError, match=r"a\.nii\.gz.*0\.\.1"):
        NiftiData(root).slices()
    save_nifti(root / "labelsTr" / "b.nii.gz", np.zeros((6, 5, 4), np.uint8))
    with pytest.raises(DataError, match="b_0000"):
        NiftiData(root).names()
    (root / "labelsTr" / "b.nii.gz").unlink()
    (root / "imagesTr" / "a_0000.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="a_0000.nii.gz"):
        NiftiData(root).slices()
    (root / "dataset.json").write_text("{")
    with pytest.raises(DataError, match="dataset.json"):
        NiftiData(root)
    with pytest.raises(DataError, match="not a recognised"):
        open_dataset(tmp_path)
