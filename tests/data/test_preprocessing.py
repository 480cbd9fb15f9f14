import io

import nibabel as nib
import numpy as np
import pytest
import torch

from msvmunet.data import Preprocessing, acdc_preprocessing, synapse_preprocessing
from msvmunet.errors import ConfigError, DataError


def test_ct_window_maps_bounds_exactly():
    prep = synapse_preprocessing()
    volume = np.array([-1000, -125, 75, 275, 3000], dtype=np.float32).reshape(5, 1, 1)
    out = prep.apply(volume)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0, :], [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-7)


def test_axis_order_is_sitk_transpose():
    prep = Preprocessing()
    volume = np.full((4, 3, 2), -1000.0, dtype=np.float32)     # nibabel (X, Y, Z)
    volume[3, 1, 0] = 275
    out = prep.apply(volume)
    assert out.shape == (2, 3, 4)                      # (Z, Y, X)
    assert out[0, 1, 3] == 1.0 and out.sum() == 1.0
    sag = Preprocessing(axis=0).apply(volume)          # slices along X
    assert sag.shape == (4, 2, 3) and sag[3, 0, 1] == 1.0


def test_mr_percentile_normalisation():
    prep = acdc_preprocessing()
    volume = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    out = prep.apply(volume)
    lo, hi = np.percentile(volume, [0.5, 99.5])
    assert out.min() == 0.0 and out.max() == 1.0
    np.testing.assert_allclose(out.transpose(2, 1, 0), np.clip((volume - lo) / (hi - lo), 0, 1), atol=1e-6)


def test_dict_round_trip_through_weights_only_checkpoint():
    prep = Preprocessing(normalization="mr", axis=1, size=96, class_names=("bg", "a", "b"))
    buffer = io.BytesIO()
    torch.save({"preprocessing": prep.to_dict()}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)["preprocessing"]
    assert Preprocessing.from_dict(loaded) == prep
    assert all(isinstance(v, (str, int, float, bool, list)) for v in prep.to_dict().values())


def test_restore_inverts_apply_with_canonical_reorientation():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 3, size=(5, 6, 7)).astype(np.uint8)
    # An LPS-like affine with permuted axes: canonical reorientation really moves voxels.
    affine = np.array([[0, -2.0, 0, 10], [-1.0, 0, 0, 5], [0, 0, 3.0, 0], [0, 0, 0, 1]])
    for canonical in (False, True):
        prep = Preprocessing(canonical=canonical, class_names=("bg", "a", "b"))
        net = prep.apply_label(label, affine)
        back = prep.restore(net, affine, label.shape)
        np.testing.assert_array_equal(back, label)
    prep = Preprocessing(canonical=True)
    canon = nib.as_closest_canonical(nib.Nifti1Image(label, affine))
    np.testing.assert_array_equal(prep.apply_label(label, affine), np.asarray(canon.dataobj).transpose(2, 1, 0))
    # voxel axes 0, 1, 2 measure 1, 2, 3 mm; canonical swaps axes 0 and 1 (they lie along A and R).
    assert Preprocessing().spacing(affine) == (3.0, 2.0, 1.0)
    assert prep.spacing(affine) == (3.0, 1.0, 2.0)


def test_restore_rejects_wrong_shape_and_bad_config():
    prep = Preprocessing()
    with pytest.raises(DataError, match="shape"):
        prep.restore(np.zeros((2, 3, 4)), None, (9, 9, 9))
    with pytest.raises(ConfigError):
        Preprocessing(normalization="pet")
    with pytest.raises(ConfigError):
        Preprocessing(window=(10, -10))
    with pytest.raises(DataError, match="NaN"):
        prep.apply(np.full((2, 2, 2), np.nan))
