"""Bad file contents are found before a run starts (nothing written), and check-data rejects what training and
evaluation reject: real files with a label out of range, a NaN, a 2-D test volume."""

from __future__ import annotations

import numpy as np
import pytest

from msvmunet import DataError
from msvmunet.cli import main
from msvmunet.data import check_dataset, make_phantom
from msvmunet.data.io import write_h5
from msvmunet.engine import evaluate, train

from .conftest import quick_config


@pytest.fixture
def phantom(tmp_path):
    root = tmp_path / "phantom"
    make_phantom(root, cases=4, test_cases=1, size=32, slices=6, seed=2)
    return root


def spoil_slice(root, name: str, *, label_value: float | None = None, nan: bool = False) -> str:
    path = root / "train_npz" / f"{name}.npz"
    with np.load(path) as f:
        image, label = f["image"].copy(), f["label"].copy()
    if label_value is not None:
        label[3, 4] = label_value
    if nan:
        image[5, 6] = np.nan
    np.savez(path, image=image, label=label)
    return str(path)


@pytest.mark.parametrize("spoil, message", [(dict(label_value=9), "label values span 0..9, outside 0..8"),
                                            (dict(nan=True), "NaN/inf")], ids=["label-out-of-range", "nan-image"])
def test_training_refuses_bad_files_before_the_run_folder_is_written(phantom, tmp_path, spoil, message, capsys):
    bad = spoil_slice(phantom, "case0002_slice003", **spoil)
    run = tmp_path / "run"
    with pytest.raises(DataError, match=message) as info:
        train(quick_config(phantom, run))
    assert bad in str(info.value) and "\n" not in str(info.value)
    assert not run.exists()
    # the command line: one line, exit 1, still nothing written
    assert main(["train", "--preset", "demo", "--data", str(phantom), "--output", str(run), "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if "error:" in line]  # besides the checking progress bar
    assert line.startswith("msvmunet train: error:") and bad in line and "Traceback" not in err
    assert not run.exists()


def test_every_bad_file_is_named_in_file_order(phantom):
    bad = [spoil_slice(phantom, f"case0001_slice00{i}", label_value=12) for i in (4, 1, 2)]
    bad.append(spoil_slice(phantom, "case0003_slice005", nan=True))
    report = check_dataset(phantom)
    assert not report.ok and report.splits["train"].valid == report.splits["train"].items - 4
    assert [next(b for b in bad if b in p) for p in report.problems] == sorted(bad)
    with pytest.raises(DataError, match=r"and 3 more problem\(s\): 'msvmunet check-data"):
        train(quick_config(phantom, phantom.parent / "run"))


def test_a_2d_test_volume_is_refused_by_check_data_as_by_evaluate(phantom, tmp_path, capsys):
    (test_file,) = (phantom / "test_vol_h5").glob("*.h5")
    write_h5(test_file, {"image": np.zeros((32, 32), np.float32), "label": np.zeros((32, 32), np.uint8)})
    assert main(["check-data", str(phantom), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "1 problem(s)" in out and str(test_file) in out and "expected a (D, H, W) volume" in out
    # the file evaluate refuses, for the same reason
    run = train(quick_config(phantom, tmp_path / "run", epochs=1, steps_per_epoch=1))
    with pytest.raises(DataError, match="expected a \\(D, H, W\\) volume") as info:
        evaluate(run / "final.pt", phantom, output=tmp_path / "eval", quiet=True)
    assert str(test_file) in str(info.value)
    # selecting on the test set reads it: refused before the run starts
    with pytest.raises(DataError, match="expected a \\(D, H, W\\) volume"):
        train(quick_config(phantom, tmp_path / "run2", select_on_test=True))
    assert not (tmp_path / "run2").exists()
