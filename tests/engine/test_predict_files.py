"""predict on files as a user gives them: DICOM series, output types, previews, folders with bad files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from msvmunet import DataError
from msvmunet.cli import main
from msvmunet.data import synapse_preprocessing
from msvmunet.data.dicom import read_dicom_series
from msvmunet.engine import predict
from msvmunet.engine.evaluate import label_set

from ..data.helpers import dicom_world, write_dicom_series
from .conftest import nano_checkpoint

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return nano_checkpoint(tmp_path_factory.mktemp("ckpt") / "final.pt", 0,
                           preprocessing=synapse_preprocessing(32).to_dict())


@pytest.mark.parametrize("oblique", [False, True], ids=["coronal_flipped", "oblique"])
def test_dicom_series_to_an_aligned_nifti(ckpt, tmp_path, oblique):
    pytest.importorskip("pydicom", minversion="3.0")
    c, s = np.cos(0.4), np.sin(0.4)
    geometry = dict(origin=(12.5, -40.0, 88.0), spacing=(0.8, 0.7), gap=3.0,
                    row_cos=(c, s, 0.0) if oblique else (1.0, 0.0, 0.0),
                    col_cos=(0.0, 0.0, -1.0))
    stored = np.random.default_rng(0).integers(800, 1400, size=(5, 30, 26)).astype(np.int16)
    write_dicom_series(tmp_path / "series", stored, **geometry)

    written = predict(ckpt, [tmp_path / "series"], tmp_path / "out", device="cpu", quiet=True)
    assert [p.name for p in written] == ["series_seg.nii.gz"]
    seg = nib.load(str(written[0]))
    assert seg.shape == (26, 30, 5)
    for index in ((0, 0, 0), (25, 0, 0), (0, 29, 0), (0, 0, 4), (7, 11, 2)):
        assert np.allclose(seg.affine @ [*index, 1.0], [*dicom_world(index, **geometry), 1.0], atol=1e-3)
    origin = dicom_world((0, 0, 0), **geometry)
    steps = np.eye(4)
    steps[:3, :3] = np.stack([dicom_world(e, **geometry) - origin for e in np.eye(3)], axis=1)
    assert nib.aff2axcodes(seg.affine) == nib.aff2axcodes(steps) == ("L", "I", "P")
    assert int(seg.header["sform_code"]) == 1 and int(seg.header["qform_code"]) == 1
    assert np.allclose(seg.header.get_qform(), seg.affine, atol=1e-4)

    # the same labels as predict on the same voxels written as NIfTI with the series' geometry
    volume, affine = read_dicom_series(tmp_path / "series")
    nib.save(nib.Nifti1Image(volume, affine), str(tmp_path / "same.nii.gz"))
    again = predict(ckpt, [tmp_path / "same.nii.gz"], tmp_path / "same_seg.nii.gz", device="cpu", quiet=True)[0]
    assert np.array_equal(np.asarray(seg.dataobj), np.asarray(nib.load(str(again)).dataobj))


@pytest.mark.parametrize("inputs, output, words", [
    (["scan.nii.gz"], "out.png", "is a volume; its labels are written as NIfTI"),
    (["series"], "out.png", "is a volume; its labels are written as NIfTI"),
    (["slice.png"], "out.nii.gz", "is a 2-D image; its labels are written as an image"),
    (["slice.png"], "out.jpg", "JPEG is lossy"),
    (["slice.png", "scan.nii.gz"], "out.nii.gz", "2 inputs need an output folder"),
], ids=["nifti_to_png", "dicom_to_png", "png_to_nifti", "png_to_jpeg", "two_to_a_file"])
def test_the_output_type_must_suit_the_input(tmp_path, capsys, inputs, output, words):
    pytest.importorskip("pydicom", minversion="3.0")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 3), np.int16), np.eye(4)), str(tmp_path / "scan.nii.gz"))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "slice.png")
    write_dicom_series(tmp_path / "series", np.zeros((2, 8, 8), np.int16))
    # the checkpoint does not exist: the output is checked before any work
    args = ["predict", *(str(tmp_path / i) for i in inputs), "-o", str(tmp_path / output),
            "--checkpoint", str(tmp_path / "missing.pt")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert words in err and "missing.pt" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / output).exists()


def test_png_masks_at_each_size_with_coloured_previews(ckpt, tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for name, shape in (("a", (40, 28)), ("b", (21, 50))):
        Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(folder / f"{name}.png")
    written = predict(ckpt, [folder], tmp_path / "out", device="cpu", quiet=True)
    assert [p.name for p in written] == ["a_seg.png", "b_seg.png"]
    colors = np.array([(0, 0, 0), *label_set(synapse_preprocessing().class_names).colors], np.float64)
    for name, shape in (("a", (40, 28)), ("b", (21, 50))):
        mask = np.asarray(Image.open(tmp_path / "out" / f"{name}_seg.png"))
        assert mask.shape == shape and mask.dtype == np.uint8 and mask.max() < 9
        preview = Image.open(tmp_path / "out" / f"{name}_seg_preview.png")
        assert preview.mode == "RGB" and preview.size == shape[::-1]
        grey = np.asarray(Image.open(folder / f"{name}.png"), np.float64)
        expected = np.where((mask > 0)[..., None], 0.5 * grey[..., None] + 0.5 * colors[mask], grey[..., None])
        assert np.abs(np.asarray(preview, np.float64) - expected).max() <= 1.0
    assert (mask > 0).any()  # an untrained net labels something: the colours were exercised


def test_a_folder_with_bad_files_writes_the_good_ones_and_lists_the_bad(ckpt, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.full((20, 24), 90, np.uint8)).save(folder / "a_good.png")
    (folder / "b_broken.nii.gz").write_bytes(b"\x1f\x8b not a nifti")
    (folder / "c_bad.png").write_bytes(b"not a png")
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 3), np.int16), np.eye(4)), str(folder / "d_good.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 3, 2), np.int16), np.eye(4)), str(folder / "e_4d.nii.gz"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "msvmunet", "predict", str(folder), "-o", str(tmp_path / "out"),
                           "--checkpoint", str(ckpt), "--device", "cpu"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "3 of 5 inputs failed (the others were written)" in proc.stderr
    lines = proc.stderr.splitlines()
    for name, why in (("b_broken.nii.gz", "unreadable or truncated NIfTI"), ("c_bad.png", "unreadable image"),
                      ("e_4d.nii.gz", "expected a 3-D volume")):
        assert any(name in line and why in line for line in lines), (name, proc.stderr)
    assert not any("a_good" in line or "d_good" in line for line in lines)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_good_seg.png", "a_good_seg_preview.png",
                                                                    "d_good_seg.nii.gz"]
    assert "a_good.png ->" in proc.stdout and "d_good.nii.gz ->" in proc.stdout


def test_the_library_raises_the_failures_after_writing(ckpt, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"x")
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(tmp_path / "ok.png")
    with pytest.raises(DataError) as err:
        predict(ckpt, [tmp_path / "bad.png", tmp_path / "ok.png"], tmp_path / "out", device="cpu", quiet=True)
    assert err.value.failures[0][0].name == "bad.png"
    assert (tmp_path / "out" / "ok_seg.png").is_file()


def test_dicom_seg_beside_the_nifti(ckpt, tmp_path):
    pytest.importorskip("highdicom", reason="DICOM-SEG output needs highdicom (the 'dicomseg' extra)")
    import pydicom

    stored = np.random.default_rng(1).integers(800, 1400, size=(4, 24, 20)).astype(np.int16)
    write_dicom_series(tmp_path / "ct", stored, col_cos=(0.0, 0.0, -1.0))
    assert main(["predict", str(tmp_path / "ct"), "-o", str(tmp_path / "out"), "--checkpoint", str(ckpt),
                 "--device", "cpu", "--dicom-seg"]) == 0
    labels = np.asarray(nib.load(str(tmp_path / "out" / "ct_seg.nii.gz")).dataobj)  # (columns, rows, slices)
    seg = pydicom.dcmread(tmp_path / "out" / "ct_seg.dcm")
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    sources = {str(pydicom.dcmread(p).SOPInstanceUID): pydicom.dcmread(p) for p in (tmp_path / "ct").iterdir()}
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == next(iter(sources.values())).SeriesInstanceUID
    names = synapse_preprocessing().class_names
    segments = {int(s.SegmentNumber): names.index(s.SegmentLabel) for s in seg.SegmentSequence}
    assert sorted(segments.values()) == sorted(int(c) for c in np.unique(labels) if c)
    frames = seg.pixel_array.reshape(-1, 24, 20)
    assert len(frames) == len(segments) * 4
    for frame, group in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        cls = segments[int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)]
        uid = str(group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        position = np.array([float(v) for v in sources[uid].ImagePositionPatient])
        k = int(round((position[1] - (-95.5)) / 2.5))  # the series' normal is +y (LPS), 2.5 mm a slice
        assert np.array_equal(frame.astype(bool), labels[:, :, k].T == cls)
