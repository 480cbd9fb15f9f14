import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from msvmunet.data import make_phantom, open_dataset, phantom_case
from msvmunet.data.phantom import _IVC, _ORGANS, _draw_shape, _upsample
from msvmunet.errors import ConfigError, DiskFullError

from .helpers import fill_disk_after, tree

ROOT = Path(__file__).resolve().parents[2]


def test_same_seed_same_data_other_seed_other_data():
    a = phantom_case(np.random.default_rng(7), slices=12, size=48)
    b = phantom_case(np.random.default_rng(7), slices=12, size=48)
    c = phantom_case(np.random.default_rng(8), slices=12, size=48)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert (a[1] != c[1]).any()
    assert a[0].dtype == np.float32 and a[1].dtype == np.uint8


def test_files_are_byte_identical_for_one_and_two_processes(tmp_path):
    make_phantom(tmp_path / "one", cases=5, test_cases=2, seed=1, size=24, slices=6, nnunet=True, workers=1)
    make_phantom(tmp_path / "two", cases=5, test_cases=2, seed=1, size=24, slices=6, nnunet=True, workers=2)
    one, two = tree(tmp_path / "one"), tree(tmp_path / "two")
    assert len(one) == 3 * 6 + 2 + 2 + 2 * 5 + 1          # train slices, test volumes, lists, NIfTI, dataset.json
    assert one.keys() == two.keys()
    assert [name for name in one if one[name] != two[name]] == []
    assert (tmp_path / "one" / "lists" / "test_vol.txt").read_text() == "case0004\ncase0005\n"


def test_slices_are_uncompressed_float32_npz_as_transunet_writes_them(tmp_path):
    make_phantom(tmp_path, cases=2, test_cases=1, size=20, slices=4)
    path = tmp_path / "train_npz" / "case0001_slice002.npz"
    with zipfile.ZipFile(path) as archive:
        assert {i.filename: i.compress_type for i in archive.infolist()} == {
            "image.npy": zipfile.ZIP_STORED, "label.npy": zipfile.ZIP_STORED}
    data = np.load(path)
    assert data["image"].dtype == np.float32 and data["image"].shape == (20, 20)
    assert 0.0 <= data["image"].min() and data["image"].max() <= 1.0
    # the readers take the compressed form too (earlier versions wrote it)
    np.savez_compressed(path, image=data["image"], label=data["label"])
    slice_data = open_dataset(tmp_path).slices("train", size=20)
    np.testing.assert_array_equal(slice_data.load_slice(2)[0], data["image"])


@pytest.mark.parametrize("organ", [_IVC, *_ORGANS], ids=lambda o: f"label{o.label}")
def test_each_organ_lies_inside_its_bounding_box(organ):
    """Drawing on the whole grid and inside the box give the same organ: the box holds it all."""
    d, h, w = 20, 64, 64
    z = ((np.arange(d, dtype=np.float32) + 0.5) / d)[:, None, None]
    y = ((np.arange(h, dtype=np.float32) + 0.5) / h)[None, :, None]
    x = ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, None, :]
    for seed in range(40):
        rng = np.random.default_rng(seed)
        shape = _draw_shape(organ, rng, float(rng.uniform(0.9, 1.1)), tuple(rng.uniform(-0.03, 0.03, size=2)))
        full, _ = shape.draw(x, y, z)
        full = np.broadcast_to(full, (d, h, w))
        box = shape.box(d, h, w)
        inside, _ = shape.draw(x[:, :, box[2]], y[:, box[1]], z[box[0]])
        assert full.any()
        assert full[box].sum() == full.sum(), f"seed {seed}: the organ leaves its box"
        np.testing.assert_array_equal(np.broadcast_to(inside, full[box].shape), full[box])


@pytest.mark.parametrize("f, n", [(2, 10), (2, 9), (3, 11), (8, 17), (4, 28)])
def test_upsampling_is_linear_interpolation_between_cell_centres(f, n):
    rng = np.random.default_rng(f * n)
    m = -(-n // f)
    a = rng.standard_normal((2, m, 3)).astype(np.float32)
    out = _upsample(a, 1, n, f)
    centres_in, centres_out = (np.arange(m) + 0.5) * f, np.arange(n) + 0.5
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(out[i, :, j], np.interp(centres_out, centres_in, a[i, :, j]), atol=1e-6)


def test_label_statistics_make_a_real_task():
    hu, label = phantom_case(np.random.default_rng(0), slices=32, size=96)
    counts = np.bincount(label.ravel(), minlength=9)
    assert (counts[1:] > 0).all() and counts.size == 9
    fractions = counts / counts.sum()
    assert fractions[5] > 5 * fractions[2]                      # liver much larger than gallbladder
    assert 0 < fractions[2] < 0.002                              # a small structure, easy to miss
    present = np.stack([(label == c).any(axis=(1, 2)) for c in range(1, 9)])
    assert present[0].all()                                      # the aorta runs through every slice
    assert (~present).any(axis=1)[1:].all()                      # every other organ is absent somewhere
    image = (np.clip(hu, -125, 275) + 125) / 400
    lo = {c: np.percentile(image[label == c], 5) for c in range(9)}
    hi = {c: np.percentile(image[label == c], 95) for c in range(9)}
    # overlapping intensities: no threshold separates liver, spleen and pancreas, or aorta and kidney
    for a, b in ((5, 7), (5, 6), (7, 6), (1, 3), (1, 4)):
        assert lo[a] < hi[b] and lo[b] < hi[a]
    background = image[label == 0]
    assert ((background > lo[5]) & (background < hi[5])).mean() > 0.01   # bowel loops look like organs


def test_phantom_nnunet_layout_has_the_test_split(phantom_dir):
    data = open_dataset(phantom_dir / "nnunet")
    assert data.cases("train") == [f"case{i:04d}" for i in range(1, 5)]
    assert data.cases("test") == ["case0005", "case0006"]
    assert json.loads((phantom_dir / "nnunet" / "dataset.json").read_text())["numTraining"] == 4
    volume = next(data.volumes("test"))
    synapse = next(open_dataset(phantom_dir).volumes("test", cases=["case0005"]))
    np.testing.assert_array_equal(volume.label, synapse.label)


def test_evaluate_runs_on_the_nnunet_phantom(phantom_dir, tmp_path):
    """`msvmunet evaluate` (a real process) on the nnU-Net layout's test split, with a nano checkpoint."""
    import torch

    from msvmunet import create_model, save_model

    torch.manual_seed(0)
    checkpoint = save_model(create_model("nano", num_classes=9), tmp_path / "nano.pt",
                            train_config={"image_size": 32})
    result = subprocess.run([sys.executable, "-m", "msvmunet", "evaluate", "--checkpoint", str(checkpoint),
                             "--data", str(phantom_dir / "nnunet"), "--output", str(tmp_path / "eval"),
                             "--protocol", "paper", "--overlays", "0", "--no-boxplot"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    cases = {row.split(",")[0] for row in (tmp_path / "eval" / "paper" / "cases.csv").read_text().splitlines()[1:]}
    assert cases == {"case0005", "case0006"}


def test_phantom_rejects_bad_sizes(tmp_path):
    with pytest.raises(ConfigError):
        make_phantom(tmp_path, cases=3, test_cases=3)
    with pytest.raises(ConfigError):
        make_phantom(tmp_path, cases=3, workers=0)


def test_a_full_disk_is_one_line_and_keeps_what_was_written(tmp_path, monkeypatch):
    """A file system stub: the 8th file written fails with ENOSPC, as on a full disk."""
    make_phantom(tmp_path / "clean", cases=3, test_cases=1, seed=2, size=24, slices=4)
    clean = tree(tmp_path / "clean")
    written = fill_disk_after(monkeypatch, 7)
    out = tmp_path / "full"
    with pytest.raises(DiskFullError) as err:
        make_phantom(out, cases=3, test_cases=1, seed=2, size=24, slices=4)
    message = str(err.value)
    assert "\n" not in message and str(out) in message and "disk is full" in message and "more needed" in message
    kept = tree(out)
    assert sorted(kept) == sorted(str(p.relative_to(out)) for p in written)   # no temporaries left
    assert all(kept[name] == clean[name] for name in kept)
