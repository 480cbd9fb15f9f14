"""Per-mask metrics against medpy 0.5 (the reference the papers' numbers come from)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from msvmunet.errors import DataError
from msvmunet.metrics import asd, binary_metrics, dice, hd95, jaccard, surface_distances

mb = pytest.importorskip("medpy.metric.binary", reason="medpy is not installed (pip install 'msvm-unet[ci]')")
medpy_surface_distances = vars(mb)["__surface_distances"]  # module-private in medpy; the definition itself


def medpy_metrics(p: np.ndarray, g: np.ndarray, spacing) -> dict[str, float]:
    return {
        "dice": mb.dc(p, g),
        "hd95": mb.hd95(p, g, voxelspacing=spacing),
        "jaccard": mb.jc(p, g),
        "asd": (mb.asd(p, g, voxelspacing=spacing) + mb.asd(g, p, voxelspacing=spacing)) / 2,
    }


def assert_matches_medpy(p: np.ndarray, g: np.ndarray, spacing) -> None:
    ours, ref = binary_metrics(p, g, spacing), medpy_metrics(p, g, spacing)
    for name in ref:
        assert ours[name] == pytest.approx(ref[name], rel=1e-9, abs=1e-6), name
    # the standalone functions agree with binary_metrics
    assert dice(p, g) == ours["dice"] and jaccard(p, g) == ours["jaccard"]
    assert hd95(p, g, spacing) == ours["hd95"] and asd(p, g, spacing) == ours["asd"]
    # and the directed distance sets are medpy's, voxel for voxel (sorted: cropping keeps C order anyway)
    d_pg, d_gp = surface_distances(p, g, spacing)
    np.testing.assert_allclose(d_pg, medpy_surface_distances(p, g, spacing), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(d_gp, medpy_surface_distances(g, p, spacing), rtol=1e-12, atol=1e-9)


BLOB_CASES = {
    "2d": ((61, 47), None),
    "2d-anisotropic": ((61, 47), (0.7, 1.3)),
    "3d": ((23, 37, 29), None),
    "3d-anisotropic": ((23, 37, 29), (2.5, 0.8, 0.75)),
    "3d-scalar-spacing": ((17, 21, 19), 1.7),
}


@pytest.mark.parametrize("repeat", range(3))
@pytest.mark.parametrize("case", BLOB_CASES, ids=str)
def test_random_blobs_match_medpy(masks, case, repeat):
    shape, spacing = BLOB_CASES[case]
    p, g = masks.blobs(shape, 0.2), masks.blobs(shape, 0.25)
    assert p.any() and g.any() and (p & g).any()
    assert_matches_medpy(p, g, spacing)


@pytest.mark.parametrize("spacing", [None, (1.5, 0.6, 0.9)], ids=["voxels", "anisotropic"])
def test_masks_touching_the_border_match_medpy(masks, spacing):
    shape = (19, 26, 23)
    p, g = masks.blobs(shape, 0.6), masks.blobs(shape, 0.55)
    for m in (p, g):  # both reach every face of the array
        for axis in range(3):
            assert np.take(m, 0, axis=axis).any() and np.take(m, -1, axis=axis).any()
    assert_matches_medpy(p, g, spacing)


def test_full_mask_has_its_border_as_surface():
    full = np.ones((5, 6), dtype=bool)
    inner = np.zeros((5, 6), dtype=bool)
    inner[2, 3] = True
    assert_matches_medpy(full, inner, None)
    # surface of the full array: its 18 edge voxels; the farthest, a corner, lies at sqrt(2^2 + 3^2)
    d_full, d_inner = surface_distances(full, inner)
    assert d_full.size == 18 and d_full.max() == pytest.approx(math.sqrt(13))
    assert d_inner.tolist() == [2.0]


@pytest.mark.parametrize("spacing", [None, (3.0, 0.5, 0.7)], ids=["voxels", "anisotropic"])
def test_single_voxels_match_medpy(spacing):
    p = np.zeros((9, 11, 13), dtype=bool)
    g = np.zeros_like(p)
    p[0, 0, 0] = True
    g[8, 4, 12] = True
    assert_matches_medpy(p, g, spacing)
    expected = math.dist((0, 0, 0), np.multiply((8, 4, 12), spacing or 1.0))
    assert hd95(p, g, spacing) == pytest.approx(expected) and asd(p, g, spacing) == pytest.approx(expected)


def test_single_voxel_against_blob_matches_medpy(masks):
    g = masks.blobs((31, 33), 0.3)
    p = np.zeros_like(g)
    p[30, 0] = True
    assert_matches_medpy(p, g, (0.9, 1.1))
    assert_matches_medpy(g, p, (0.9, 1.1))


def test_far_apart_masks_cropping_is_exact(masks):
    """The crop to the bounding box must not change any distance: small masks in opposite corners."""
    p = np.zeros((40, 50, 45), dtype=bool)
    g = np.zeros_like(p)
    p[:5, :6, :4] = masks.blobs((5, 6, 4), 0.6, sigma=0.7)
    g[-6:, -5:, -7:] = masks.blobs((6, 5, 7), 0.6, sigma=0.7)
    assert_matches_medpy(p, g, (2.0, 0.7, 0.7))


def test_thin_structures_match_medpy(masks):
    p = np.zeros((15, 40), dtype=np.uint8)
    g = np.zeros_like(p)
    p[7, 3:37] = 1  # a one-voxel line is all surface
    g[5:9, 10:30] = 2  # any non-zero value is foreground
    assert_matches_medpy(p.astype(bool), g.astype(bool), (1.0, 0.5))
    assert binary_metrics(p, g, (1.0, 0.5)) == binary_metrics(p > 0, g > 0, (1.0, 0.5))


def test_identical_masks(masks):
    m = masks.blobs((20, 21, 22), 0.3)
    assert binary_metrics(m, m, (2.0, 1.0, 1.0)) == {"dice": 1.0, "hd95": 0.0, "jaccard": 1.0, "asd": 0.0}


def test_asd_is_the_mean_of_the_two_directed_means_not_assd(masks):
    p = np.zeros((30, 30), dtype=bool)
    g = np.zeros_like(p)
    p[5:25, 5:25] = True  # 76 surface voxels
    g[10, 10] = True  # 1 surface voxel: the two directions have very different sizes
    directed = (mb.asd(p, g) + mb.asd(g, p)) / 2
    assert asd(p, g) == pytest.approx(directed, rel=1e-12)
    assert abs(asd(p, g) - mb.assd(p, g)) > 1.0


def test_empty_masks_give_nan_where_medpy_raises():
    empty = np.zeros((6, 7), dtype=bool)
    full = np.zeros_like(empty)
    full[2:4, 2:5] = True
    for p, g in [(empty, full), (full, empty), (empty, empty)]:
        assert math.isnan(hd95(p, g)) and math.isnan(asd(p, g))
        assert all(d.size == 0 for d in surface_distances(p, g))
        with pytest.raises(RuntimeError):
            mb.hd95(p, g)
    # dice and jaccard are defined (0) when exactly one mask is empty, as in medpy ...
    for p, g in [(empty, full), (full, empty)]:
        assert dice(p, g) == mb.dc(p, g) == 0.0
        assert jaccard(p, g) == mb.jc(p, g) == 0.0
    # ... and undefined when both are (medpy 0.5.2: dc NaN with a warning, jc 1.0)
    assert math.isnan(dice(empty, empty)) and math.isnan(jaccard(empty, empty))


def test_return_types_are_python_floats(masks):
    m = masks.blobs((12, 13), 0.3)
    assert all(type(v) is float for v in binary_metrics(m, ~m).values())


def test_shape_mismatch_is_a_data_error():
    with pytest.raises(DataError, match=r"\(4, 5\) vs \(5, 4\)"):
        dice(np.ones((4, 5)), np.ones((5, 4)))
    with pytest.raises(DataError):
        hd95(np.ones((4, 5)), np.ones((4, 5, 1)))


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (1.0, 0.0, 1.0), (1.0, -1.0, 1.0), (1.0, float("nan"), 1.0), 0.0])
def test_bad_spacing_is_a_data_error(spacing):
    m = np.zeros((4, 5, 6), dtype=bool)
    m[1:3, 1:3, 1:3] = True
    with pytest.raises(DataError, match="spacing"):
        hd95(m, m, spacing)
