"""evaluate and predict on real files: reports, the selection note, NIfTI geometry, 2-D images."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from msvmunet import ConfigError, DataError, load_model
from msvmunet.cli import main
from msvmunet.data import open_dataset
from msvmunet.engine import evaluate, predict, predict_volume, train

from .conftest import quick_config


@pytest.fixture(scope="module")
def trained(tiny_phantom, tmp_path_factory):
    """A checkpoint selected on the test set, the paper's way."""
    out = tmp_path_factory.mktemp("trained")
    return train(quick_config(tiny_phantom, out / "run", select_on_test=True, val_every=1))


def test_evaluate_writes_both_protocols_and_says_how_the_checkpoint_was_chosen(trained, tiny_phantom, tmp_path):
    summaries = evaluate(trained / "best.pt", tiny_phantom, output=tmp_path / "eval", overlays=1, quiet=True)
    assert set(summaries) == {"paper", "strict"} and summaries["paper"].n_cases == 2
    for protocol in ("paper", "strict"):
        folder = tmp_path / "eval" / protocol
        assert {"cases.csv", "summary.md", "summary.json", "dice_boxplot.png"} <= {p.name for p in folder.iterdir()}
        report = json.loads((folder / "summary.json").read_text())
        assert report["protocol"] == protocol
        assert "TEST set" in report["selection"]
        assert "TEST set" in (folder / "summary.md").read_text()
    assert len(list((tmp_path / "eval" / "overlays").glob("*.png"))) >= 1
    rows = (tmp_path / "eval" / "paper" / "cases.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 8  # header + 2 cases x 8 organs


def test_evaluate_refuses_a_dataset_with_other_classes(trained, tmp_path):
    from msvmunet.data import make_phantom

    make_phantom(tmp_path / "nn", cases=3, test_cases=1, size=32, slices=8, nnunet=True)
    folder = tmp_path / "nn" / "nnunet"
    meta = json.loads((folder / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "organ": 1}
    (folder / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises((ConfigError, DataError)):
        evaluate(trained / "final.pt", folder, output=tmp_path / "e", quiet=True)


def test_predict_nifti_keeps_geometry_and_matches_slice_inference(trained, tiny_phantom, tmp_path):
    volume = next(iter(open_dataset(tiny_phantom).volumes("test")))
    # back to a raw CT in nibabel order (x, y, z) with an oblique-free anisotropic affine
    hu = (volume.image * 400.0 - 125.0).transpose(2, 1, 0).astype(np.int16)
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = (-12.0, 30.0, 7.5)
    image = nib.Nifti1Image(hu, affine)
    image.header["descrip"] = b"test scan"
    path = tmp_path / "scan.nii.gz"
    nib.save(image, str(path))

    out = tmp_path / "pred"
    written = predict(trained / "final.pt", [path], out, overlay_dir=tmp_path / "overlays", quiet=True)
    assert [p.name for p in written] == ["scan_seg.nii.gz"]
    seg = nib.load(str(written[0]))
    assert seg.shape == hu.shape
    assert np.allclose(seg.affine, affine)
    assert seg.header["descrip"].tobytes().rstrip(b"\0") == b"test scan"
    labels = np.asarray(seg.dataobj)
    assert labels.dtype == np.uint8 and labels.max() < 9
    # the same labels as slice-by-slice inference on the prepared volume (window, axis order)
    model = load_model(trained / "final.pt")
    expected = predict_volume(model, np.clip(hu.transpose(2, 1, 0).astype(np.float32) + 125, 0, 400) / 400, size=32)
    assert np.array_equal(labels.transpose(2, 1, 0), expected)
    assert list((tmp_path / "overlays").glob("*.png"))


def test_predict_png_and_cli(trained, tmp_path):
    pixels = (np.random.default_rng(0).random((40, 28)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "slice.png")
    assert main(["predict", str(tmp_path / "slice.png"), "-o", str(tmp_path / "slice_seg.png"),
                 "--checkpoint", str(trained / "final.pt")]) == 0
    seg = np.asarray(Image.open(tmp_path / "slice_seg.png"))
    assert seg.shape == (40, 28) and seg.max() < 9


def test_predict_bad_inputs(trained, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["predict", str(tmp_path / "notes.txt"), "-o", str(tmp_path / "o"),
                 "--checkpoint", str(trained / "final.pt")]) == 1
    assert "not a NIfTI" in capsys.readouterr().err
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b garbage")
    assert main(["predict", str(broken), "-o", str(tmp_path / "o"), "--checkpoint", str(trained / "final.pt")]) == 1
    assert "broken.nii.gz" in capsys.readouterr().err
