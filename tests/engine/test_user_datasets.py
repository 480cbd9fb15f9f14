"""The datasets users have, from the command line: check-data, a two-step training, evaluate, predict.

Each layout is written with real files; three run as subprocesses (``python -m msvmunet ...``: SSL4MIS,
ISIC, two-channel NIfTI), three (BUSI, Kvasir, colour masks) through the same command-line entry point in
this process, to keep the suite short (each subprocess imports torch again).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import sys

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from msvmunet.cli import main
from msvmunet.metrics import confusion_matrix

from ..conftest import ROOT
from ..data.layouts import (write_busi, write_colour_masks, write_isic, write_kvasir, write_nifti_channels,
                            write_ssl4mis)


def subprocess_cli(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "msvmunet", *args], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def inprocess_cli(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(args)) == 0, out.getvalue()
    return out.getvalue()


TRAIN = ("--preset", "demo", "--image-size", "32", "--batch-size", "4", "--epochs", "1", "--steps-per-epoch", "2",
         "--device", "cpu", "--seed", "1")

# layout: (writer, kind shown by check-data, training flags, split evaluated, classes, channels, runner)
LAYOUTS = {
    "ssl4mis": (write_ssl4mis, "ssl4mis", (), "test", 4, 1, subprocess_cli),
    "isic": (write_isic, "images", (), "test", 2, 3, subprocess_cli),
    "busi": (write_busi, "images", ("--val-cases", "0.2"), "train", 2, 1, inprocess_cli),
    "nifti2": (write_nifti_channels, "nifti", (), "test", 2, 2, subprocess_cli),
    "kvasir": (write_kvasir, "images", ("--val-cases", "0.25"), "train", 2, 3, inprocess_cli),
    "colour": (write_colour_masks, "images", (), "test", 3, 1, inprocess_cli),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_check_train_evaluate_predict(layout, tmp_path):
    write, kind, flags, split, classes, channels, cli = LAYOUTS[layout]
    data, run, out = tmp_path / "data", tmp_path / "run", tmp_path / "eval"
    data.mkdir()
    write(data)
    text = cli("check-data", str(data), "--no-progress")
    assert f"{kind} dataset, {classes} classes" in text and f"{channels} image channel(s)" in text
    assert "no problems found" in text

    cli("train", "--data", str(data), "--output", str(run), *TRAIN, *flags)
    ckpt = torch.load(run / "final.pt", weights_only=True)
    assert ckpt["preprocessing"]["channels"] == channels
    assert ckpt["state_dict"]["encoder.stem.conv1.weight"].shape[1] == (3 if channels == 1 else channels)
    if layout in ("ssl4mis", "isic") or flags:  # the dataset's own validation split, or held-out cases
        best = torch.load(run / "best.pt", weights_only=True)
        assert ("held out of training" if flags else "validation split") in best["selection"]
        assert "val_dice" in best["history"][-1]

    cli("evaluate", "--checkpoint", str(run / "final.pt"), "--data", str(data), "--split", split,
        "--output", str(out), "--device", "cpu", "--overlays", "1", "--no-boxplot")
    pooled = json.loads((out / "pooled" / "summary.json").read_text())
    with open(out / "paper" / "cases.csv") as f:
        n_cases = len({row["case"] for row in csv.DictReader(f)})
    assert pooled["n_images"] == n_cases > 0
    assert np.asarray(pooled["confusion_matrix"]).shape == (classes, classes)
    assert all(v is None or 0.0 <= v <= 1.0 for v in pooled["total"].values())
    with open(out / "pooled" / "images.csv") as f:
        assert sum(row["class"] == "mean" for row in csv.DictReader(f)) == n_cases
    assert list((out / "overlays").glob("*.png"))
    PREDICT[layout](cli, data, run / "final.pt", tmp_path, pooled)


def _predict_images(cli, images, checkpoint, tmp_path, classes):
    cli("predict", *map(str, images), "-o", str(tmp_path / "pred"), "--checkpoint", str(checkpoint), "--device", "cpu")
    preds = {}
    for image in images:
        pred = np.asarray(Image.open(tmp_path / "pred" / f"{image.stem}_seg.png"))
        assert pred.shape == Image.open(image).size[::-1] and pred.max() < classes  # each input's own size
        preds[image] = pred
    return preds


def _predict_busi(cli, data, checkpoint, tmp_path, pooled):
    """Grey images: the pooled confusion matrix of evaluate equals the one counted from predict's masks."""
    images = sorted(p for p in data.rglob("*.png") if "_mask" not in p.name)
    total = np.zeros((2, 2), np.int64)
    for image, pred in _predict_images(cli, images, checkpoint, tmp_path, 2).items():
        gt = np.zeros(pred.shape, np.uint8)
        for mask in image.parent.glob(f"{image.stem}_mask*.png"):
            gt = np.maximum(gt, np.asarray(Image.open(mask)) // 255)
        total += confusion_matrix(pred, gt, 2)
    np.testing.assert_array_equal(pooled["confusion_matrix"], total)


def _predict_ssl4mis(cli, data, checkpoint, tmp_path, pooled):
    with h5py.File(data / "data" / "patient009_frame01.h5") as f:
        volume = f["image"][()].transpose(2, 1, 0)                 # (Z, H, W) -> nibabel (X, Y, Z)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "scan.nii.gz"))
    cli("predict", str(tmp_path / "scan.nii.gz"), "-o", str(tmp_path / "seg.nii.gz"), "--checkpoint", str(checkpoint),
        "--device", "cpu")
    seg = nib.load(str(tmp_path / "seg.nii.gz"))
    assert seg.shape == volume.shape and int(np.asarray(seg.dataobj).max()) < 4


def _predict_nifti2(cli, data, checkpoint, tmp_path, pooled):
    """One file per channel: a case is its _0000 file, read with its _0001 beside it; the confusion matrix of
    predict's labels equals evaluate's on the same test case. A case missing a channel is a one-line error."""
    cli("predict", str(data / "imagesTs"), "-o", str(tmp_path / "pred"), "--checkpoint", str(checkpoint),
        "--device", "cpu")
    assert [p.name for p in (tmp_path / "pred").glob("*.nii.gz")] == ["brain004_0000_seg.nii.gz"]
    pred = np.asarray(nib.load(str(tmp_path / "pred" / "brain004_0000_seg.nii.gz")).dataobj)
    gt = np.asarray(nib.load(str(data / "labelsTs" / "brain004.nii.gz")).dataobj)
    np.testing.assert_array_equal(pooled["confusion_matrix"], confusion_matrix(pred, gt, 2))
    (data / "imagesTs" / "brain004_0001.nii.gz").unlink()
    proc = subprocess.run([sys.executable, "-m", "msvmunet", "predict", str(data / "imagesTs" / "brain004_0000.nii.gz"),
                           "-o", str(tmp_path / "x.nii.gz"), "--checkpoint", str(checkpoint), "--device", "cpu"],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 1 and "brain004_0001.nii.gz is missing" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


PREDICT = {
    "ssl4mis": _predict_ssl4mis,
    "isic": lambda cli, data, ckpt, tmp, _: _predict_images(cli, sorted((data / "test" / "images").iterdir()),
                                                            ckpt, tmp, 2),
    "busi": _predict_busi,
    "nifti2": _predict_nifti2,
    "kvasir": lambda cli, data, ckpt, tmp, _: _predict_images(cli, sorted((data / "images").iterdir())[:3], ckpt, tmp, 2),
    "colour": lambda cli, data, ckpt, tmp, _: _predict_images(cli, sorted((data / "image").iterdir())[:3], ckpt, tmp, 3),
}


def test_evaluate_refuses_data_of_another_channel_count(tmp_path):
    from msvmunet.engine import evaluate, train
    from msvmunet.errors import ConfigError

    from .conftest import quick_config

    write_nifti_channels(tmp_path / "two")
    write_nifti_channels(tmp_path / "three", channels=("T1", "T2", "FLAIR"))
    run = train(quick_config(tmp_path / "two", tmp_path / "run", epochs=1, steps_per_epoch=1))
    with pytest.raises(ConfigError, match="takes 2 input channels"):
        evaluate(run / "final.pt", tmp_path / "three", output=tmp_path / "e", quiet=True)
