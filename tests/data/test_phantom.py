import numpy as np
import pytest

from msvmunet.data import make_phantom, open_dataset, phantom_case
from msvmunet.errors import ConfigError


def test_same_seed_same_data_other_seed_other_data():
    a = phantom_case(np.random.default_rng(7), slices=12, size=48)
    b = phantom_case(np.random.default_rng(7), slices=12, size=48)
    c = phantom_case(np.random.default_rng(8), slices=12, size=48)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert (a[1] != c[1]).any()


def test_make_phantom_files_are_deterministic(tmp_path):
    for name in ("a", "b"):
        make_phantom(tmp_path / name, cases=3, test_cases=1, seed=1, size=24, slices=6)
    for rel in ("train_npz/case0002_slice004.npz",):
        x, y = np.load(tmp_path / "a" / rel), np.load(tmp_path / "b" / rel)
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])
    assert (tmp_path / "a" / "lists" / "test_vol.txt").read_text() == "case0003\n"


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


def test_phantom_nnunet_layout(phantom_dir):
    data = open_dataset(phantom_dir / "nnunet")
    assert data.cases() == [f"case{i:04d}" for i in range(1, 7)]


def test_phantom_rejects_bad_sizes(tmp_path):
    with pytest.raises(ConfigError):
        make_phantom(tmp_path, cases=3, test_cases=3)
