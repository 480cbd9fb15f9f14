import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

from msvmunet.cli import main
from msvmunet.data import make_phantom, open_dataset, prepare_acdc, prepare_synapse
from msvmunet.errors import DataError, DiskFullError

from .helpers import btcv_case, fill_disk_after, save_nifti, tree

ROOT = Path(__file__).resolve().parents[2]


def test_prepare_synapse_window_remap_split_spacing(btcv_raw, tmp_path):
    out = tmp_path / "synapse"
    with pytest.warns(UserWarning, match="case0003") as record:
        summary = prepare_synapse(btcv_raw, out, progress=False)
    assert "case0040" in str(record[0].message) and "case0005" not in str(record[0].message)
    assert summary.splits == {"train": ["case0005", "case0006"], "test": ["case0001", "case0002"]}
    assert (out / "lists" / "test_vol.txt").read_text().split() == ["case0001", "case0002"]
    train_list = (out / "lists" / "train.txt").read_text().split()
    assert train_list[:2] == ["case0005_slice000", "case0005_slice001"] and len(train_list) == 10

    hu, label = btcv_case(5)                                  # nibabel (X=12, Y=10, Z=5)
    z0 = np.load(out / "train_npz" / "case0005_slice000.npz")
    assert z0["image"].shape == (10, 12) and z0["image"].dtype == np.float32
    # (slice, row, column) = (z, y, x): voxel (x, y, z) lands at [z][y, x]
    assert z0["image"][0, 0] == 0.0 and z0["image"][0, 1] == 1.0 and z0["image"][0, 2] == 0.5
    np.testing.assert_allclose(z0["image"], (np.clip(hu[:, :, 0].T, -125, 275) + 125) / 400, atol=1e-6)
    z1 = np.load(out / "train_npz" / "case0005_slice001.npz")["label"]
    assert (z1[2, 3], z1[2, 4], z1[2, 5], z1[2, 6]) == (1, 6, 7, 0)
    assert np.load(out / "train_npz" / "case0005_slice004.npz")["label"][3, 7] == 5
    assert z1.sum() == 1 + 6 + 7

    with h5py.File(out / "test_vol_h5" / "case0002.npy.h5") as f:
        assert f["image"].shape == (5, 10, 12)
        np.testing.assert_allclose(f.attrs["spacing"], (5.0, 0.7, 0.8))
    assert next(open_dataset(out).volumes("test", cases=["case0001"])).spacing == pytest.approx((4.0, 0.7, 0.8))


def test_prepare_synapse_is_idempotent(btcv_raw, tmp_path):
    out = tmp_path / "synapse"
    with pytest.warns(UserWarning):
        prepare_synapse(btcv_raw, out, progress=False)
    stamp = (out / "train_npz" / "case0006_slice002.npz").stat().st_mtime_ns
    (out / "test_vol_h5" / "case0001.npy.h5").unlink()        # as if interrupted
    with pytest.warns(UserWarning):
        summary = prepare_synapse(btcv_raw, out, progress=False)
    assert summary.written == ["case0001"] and sorted(summary.skipped) == ["case0002", "case0005", "case0006"]
    assert (out / "train_npz" / "case0006_slice002.npz").stat().st_mtime_ns == stamp
    assert not list(out.rglob(".tmp-*"))


def test_prepare_synapse_bad_raw(tmp_path, btcv_raw):
    with pytest.raises(DataError, match="RawData/Training"):
        prepare_synapse(tmp_path / "nothing", tmp_path / "out", progress=False)
    label = btcv_raw / "label" / "label0005.nii.gz"
    save_nifti(label, np.full((12, 10, 5), 20, np.uint8))
    with pytest.raises(DataError, match="label0005"), pytest.warns(UserWarning):
        prepare_synapse(btcv_raw, tmp_path / "out", progress=False)


def test_prepare_acdc_split_phases_normalisation(acdc_raw, tmp_path):
    out = tmp_path / "acdc"
    summary = prepare_acdc(acdc_raw, out, progress=False)
    # 5 patients per group: round(3.5) = 4 train, round(0.5) = 0 valid, 1 test per group.
    sizes = {k: len(v) for k, v in summary.splits.items()}
    assert sizes == {"train": 8, "valid": 0, "test": 2}
    assert summary.splits == prepare_acdc(acdc_raw, tmp_path / "again", progress=False).splits
    assert summary.splits != prepare_acdc(acdc_raw, tmp_path / "other", seed=5, progress=False).splits
    test_case = summary.splits["test"][0]
    vol = np.load(out / "test" / f"{test_case}_volume_ES.npz")
    assert vol["img"].shape == (3, 8, 9) and vol["label"].shape == (3, 8, 9)
    np.testing.assert_allclose(vol["spacing"], (10.0, 1.5, 1.5))
    assert vol["img"].min() == 0.0 and vol["img"].max() == 1.0
    train_case = summary.splits["train"][0]
    names = (out / "lists" / "train.txt").read_text().split()
    assert f"{train_case}_ED_slice_00" in names and f"{train_case}_ES_slice_02" in names
    assert len(names) == 8 * 2 * 3

    data = open_dataset(out)
    assert data.kind == "acdc" and data.cases("train") == summary.splits["train"]
    (ed,) = [v for v in data.volumes("train", cases=[train_case]) if v.case.endswith("ED")]
    number = int(train_case.split("_")[1])
    gt = acdc_raw / f"patient{number:03d}" / f"patient{number:03d}_frame01_gt.nii.gz"
    raw_label = np.asarray(nib.load(str(gt)).dataobj)
    np.testing.assert_array_equal(ed.label, raw_label.transpose(2, 1, 0))
    again = prepare_acdc(acdc_raw, out, progress=False)
    assert again.written == [] and len(again.skipped) == 10


def test_prepare_acdc_bad_raw(tmp_path):
    with pytest.raises(DataError, match="patientXXX"):
        prepare_acdc(tmp_path, tmp_path / "out", progress=False)


def test_prepare_synapse_refuses_files_of_the_same_case_names_it_did_not_write(btcv_raw, tmp_path, capsys):
    out = tmp_path / "s"
    make_phantom(out, cases=6, test_cases=2, size=16, slices=4)          # case0001..case0006, other data
    before = tree(out)
    with pytest.warns(UserWarning), pytest.raises(DataError, match="--overwrite") as err:
        prepare_synapse(btcv_raw, out, progress=False)
    assert "case0001" in str(err.value) and "\n" not in str(err.value)
    assert tree(out) == before                                            # refused before writing anything
    assert main(["prepare", "synapse", "--raw", str(btcv_raw), "-o", str(out), "--no-progress"]) == 1
    assert "--overwrite" in capsys.readouterr().err

    with pytest.warns(UserWarning):
        summary = prepare_synapse(btcv_raw, out, overwrite=True, progress=False)
    assert sorted(summary.written) == ["case0001", "case0002", "case0005", "case0006"]
    # the phantom's case0001 was a training case, BTCV's is a test volume: no stale slice is left
    assert not list((out / "train_npz").glob("case0001_*")) and not (out / "test_vol_h5" / "case0005.npy.h5").exists()
    assert len(list((out / "train_npz").glob("case0005_*"))) == 5
    hu, _ = btcv_case(5)
    image = np.load(out / "train_npz" / "case0005_slice000.npz")["image"]
    np.testing.assert_allclose(image, (np.clip(hu[:, :, 0].T, -125, 275) + 125) / 400, atol=1e-6)
    with pytest.warns(UserWarning):
        again = prepare_synapse(btcv_raw, out, progress=False)
    assert again.written == [] and len(again.skipped) == 4


def test_prepare_synapse_refuses_to_keep_the_output_of_other_raw_files(btcv_raw, tmp_path):
    out = tmp_path / "s"
    with pytest.warns(UserWarning):
        prepare_synapse(btcv_raw, out, progress=False)
    hu, label = btcv_case(5)
    label[3, 2, 1] = 6                                                    # another labelling of case 5
    save_nifti(btcv_raw / "label" / "label0005.nii.gz", label, zooms=(0.8, 0.7, 8.0))
    with pytest.warns(UserWarning), pytest.raises(DataError, match="case0005.*raw files differ.*--overwrite"):
        prepare_synapse(btcv_raw, out, progress=False)
    with pytest.warns(UserWarning):
        summary = prepare_synapse(btcv_raw, out, overwrite=True, progress=False)
    assert len(summary.written) == 4
    assert np.load(out / "train_npz" / "case0005_slice001.npz")["label"][2, 3] == 5
    manifest = json.loads((out / "prepare_manifest.json").read_text())
    size = (btcv_raw / "label" / "label0005.nii.gz").stat().st_size
    assert manifest["cases"]["case0005"]["sources"]["label0005.nii.gz"][0] == size


@pytest.fixture
def larger_btcv_raw(tmp_path) -> Path:
    """Four training cases of 64 x 64 x 80 (about a second of preparation)."""
    raw = tmp_path / "Training"
    for index in (5, 6, 7, 9):
        hu, label = btcv_case(index, shape=(64, 64, 80))
        save_nifti(raw / "img" / f"img{index:04d}.nii.gz", hu)
        save_nifti(raw / "label" / f"label{index:04d}.nii.gz", label)
    return raw


def test_a_prepare_killed_with_sigkill_reruns_to_identical_output(larger_btcv_raw, tmp_path):
    clean, out = tmp_path / "clean", tmp_path / "killed"
    with pytest.warns(UserWarning):
        prepare_synapse(larger_btcv_raw, clean, progress=False)
    process = subprocess.Popen([sys.executable, "-m", "msvmunet", "prepare", "synapse", "--raw", str(larger_btcv_raw),
                                "--output", str(out), "--no-progress"], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    manifest = out / "prepare_manifest.json"
    while not manifest.exists() and process.poll() is None:
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)                                  # as soon as the first case is started
    assert process.wait(timeout=60) == -signal.SIGKILL
    entries = json.loads(manifest.read_text())["cases"]
    assert len(entries) < 4 or not all(e["complete"] for e in entries.values())   # killed part-way
    with pytest.warns(UserWarning):
        summary = prepare_synapse(larger_btcv_raw, out, progress=False)
    assert summary.written                                                # the unfinished cases were redone
    assert tree(out) == tree(clean)


def test_a_full_disk_stops_prepare_with_one_line_and_loses_nothing(btcv_raw, tmp_path, monkeypatch):
    clean, out = tmp_path / "clean", tmp_path / "full"
    with pytest.warns(UserWarning):
        prepare_synapse(btcv_raw, clean, progress=False)
    written = fill_disk_after(monkeypatch, 7)                             # fails inside the third case
    with pytest.warns(UserWarning), pytest.raises(DiskFullError) as err:
        prepare_synapse(btcv_raw, out, progress=False)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{out}: the disk is full") and "more needed" in message
    kept = tree(out)
    assert {str(p.relative_to(out)) for p in written} <= set(kept)
    assert all(kept[name] == tree(clean)[name] for name in kept if name != "prepare_manifest.json")
    monkeypatch.undo()
    with pytest.warns(UserWarning):
        summary = prepare_synapse(btcv_raw, out, progress=False)
    assert summary.written and summary.skipped                            # finished cases kept, the rest redone
    assert tree(out) == tree(clean)
