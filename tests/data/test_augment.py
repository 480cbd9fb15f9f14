import math

import numpy as np
import pytest
import torch
from scipy.ndimage import map_coordinates

from msvmunet.data import OPS, AugmentConfig, Augmenter, gaussian_blur, normalize, resize_labels
from msvmunet.errors import ConfigError


def only(op: str, **kw) -> Augmenter:
    """An augmenter that applies exactly ``op`` to every sample."""
    return Augmenter(AugmentConfig(ops=(op,), min_ops=1, max_ops=1, flip_p=1.0, **kw))


def batch(b=3, h=9, w=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 1, h, w, generator=g), torch.randint(0, 9, (b, h, w), generator=g)


@pytest.mark.parametrize("op, moved", [("flipud", (6, 1)), ("fliplr", (2, 7))])
def test_flip_moves_a_known_pixel(op, moved):
    images = torch.zeros(2, 1, 9, 9)
    labels = torch.zeros(2, 9, 9, dtype=torch.long)
    images[:, 0, 2, 1], labels[:, 2, 1] = 0.7, 5
    out, lab = only(op)(images, labels, 0)
    assert out[0, 0, moved[0], moved[1]] == 0.7 and out.sum() == pytest.approx(1.4)
    assert lab[1, moved[0], moved[1]] == 5 and lab.sum() == 10
    assert images[0, 0, 2, 1] == 0.7                     # the input is left alone


def test_flip_that_does_not_fire_is_identity():
    images, labels = batch()
    aug = Augmenter(AugmentConfig(ops=("flipud",), min_ops=1, max_ops=1, flip_p=0.0))
    out, lab = aug(images, labels, 0)
    assert torch.equal(out, images) and torch.equal(lab, labels)


@pytest.mark.parametrize("mode, std", [("faithful", 1.275), ("corrected", 0.005)])
def test_noise_strength(mode, std):
    images, labels = batch(4, 64, 64)
    out, lab = only("noise", mode=mode)(images, labels, 0)
    assert (out - images).std().item() == pytest.approx(std, rel=0.03)
    assert torch.equal(lab, labels)


def _numpy_blur(image: np.ndarray, sigma: float, size: int) -> np.ndarray:
    x = np.arange(size) - (size - 1) / 2
    k = np.exp(-x ** 2 / (2 * sigma ** 2))
    k /= k.sum()
    pad = size // 2
    p = np.pad(image, pad, mode="reflect")               # OpenCV's BORDER_REFLECT_101
    rows = sum(k[i] * p[:, i:i + image.shape[1]] for i in range(size))
    return sum(k[i] * rows[i:i + image.shape[0], :] for i in range(size))


def test_blur_is_opencv_gaussian_5x5_reflect101():
    images, labels = batch(2, 11, 13)
    out, lab = only("blur")(images, labels, 0)
    np.testing.assert_allclose(out[1, 0].numpy(), _numpy_blur(images[1, 0].double().numpy(), 1.0, 5), atol=1e-6)
    assert torch.equal(lab, labels)
    scaled, _ = only("blur", blur_reference_size=26)(images, labels, 0)   # H = 11 -> sigma 11/26
    torch.testing.assert_close(scaled, gaussian_blur(images, 11 / 26))


@pytest.mark.parametrize("mode, center", [("faithful", 0.0), ("corrected", 0.5)])
def test_linear_contrast_center(mode, center):
    images, labels = batch(5, 8, 8)
    out, _ = only("contrast", mode=mode)(images, labels, 0)
    alpha = (out - center) / (images - center)
    per_sample = alpha.flatten(1)
    assert torch.allclose(per_sample, per_sample[:, :1], atol=1e-4)
    assert ((per_sample[:, 0] >= 0.5) & (per_sample[:, 0] <= 1.5)).all()


def _expected_affine(image: np.ndarray, matrix: np.ndarray, shift=(0.0, 0.0)) -> np.ndarray:
    """Output pixel p (centred x, y) samples input matrix^-1 (p - shift); bilinear, zero fill."""
    h, w = image.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    p = np.stack([xx - (w - 1) / 2 - shift[0], yy - (h - 1) / 2 - shift[1]])
    q = np.einsum("ij,jhw->ihw", np.linalg.inv(matrix), p)
    return map_coordinates(image, [q[1] + (h - 1) / 2, q[0] + (w - 1) / 2], order=1, mode="grid-constant", cval=0.0)


@pytest.mark.parametrize("op, kw, matrix, shift", [
    ("rotate", {"rotate": (30.0, 30.0)},
     [[math.cos(math.pi / 6), -math.sin(math.pi / 6)], [math.sin(math.pi / 6), math.cos(math.pi / 6)]], (0, 0)),
    ("scale", {"scale": (1.3, 1.3)}, [[1.3, 0], [0, 1.3]], (0, 0)),
    ("shear", {"shear": (12.0, 12.0)}, None, (0, 0)),
    ("translate", {"translate": (0.25, 0.25)}, [[1, 0], [0, 1]], (3.0, 2.5)),
])
def test_affine_matches_the_documented_transform(op, kw, matrix, shift):
    images, labels = batch(2, 10, 12)
    if matrix is None:  # imgaug 0.4: y-shear then x-shear by the same angle, skimage's shear matrix
        s = math.radians(12.0)
        matrix = [[math.cos(s) - math.sin(s) ** 2, -math.sin(s)], [math.cos(s) * math.sin(s), math.cos(s)]]
    out, _ = only(op, **kw)(images, labels, 0)
    expected = _expected_affine(images[0, 0].double().numpy(), np.array(matrix), shift)
    np.testing.assert_allclose(out[0, 0].numpy(), expected, atol=1e-5)


def test_rotation_by_90_degrees_moves_image_and_label_together():
    images = torch.zeros(1, 1, 9, 9)
    labels = torch.zeros(1, 9, 9, dtype=torch.long)
    images[0, 0, 4, 6], labels[0, 4, 6] = 1.0, 3          # right of the centre (4, 4)
    out, lab = only("rotate", rotate=(90.0, 90.0))(images, labels, 0)
    assert out[0, 0, 6, 4].item() == pytest.approx(1.0, abs=1e-5) and lab[0, 6, 4] == 3
    assert lab.sum() == 3 and out.sum().item() == pytest.approx(1.0, abs=1e-4)


def test_translation_fills_with_zero():
    images = torch.ones(1, 1, 8, 8)
    labels = torch.full((1, 8, 8), 2)
    out, lab = only("translate", translate=(0.25, 0.25))(images, labels, 0)
    assert (out[0, 0, :2] == 0).all() and (lab[0, :, :2] == 0).all()
    assert (out[0, 0, 2:, 2:] == 1).all() and (lab[0, 2:, 2:] == 2).all()


def _blob(b=4, n=48):
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    r = ((yy - n / 2 + 3) ** 2 + (xx - n / 2) ** 2).float().sqrt()
    image = (1 - r / n).clamp(0, 1)[None, None].repeat(b, 1, 1, 1)
    return image, (image[:, 0] > 0.75).long() * 4 + (image[:, 0] > 0.9).long() * 3


@pytest.mark.parametrize("op", ["scale", "rotate", "shear", "piecewise", "translate", "flipud", "fliplr"])
def test_labels_move_with_the_image_and_stay_in_range(op):
    images, labels = _blob()
    out, lab = only(op)(images, labels, 1)
    assert lab.dtype == torch.int64 and set(lab.unique().tolist()) <= {0, 4, 7}
    inside = out[:, 0] > 0.05                             # away from the zero-filled border
    recomputed = (out[:, 0] > 0.75).long() * 4 + (out[:, 0] > 0.9).long() * 3
    assert (recomputed[inside] == lab[inside]).float().mean() > 0.97


def test_piecewise_is_a_small_local_distortion():
    images, labels = _blob(8)
    out, lab = only("piecewise")(images, labels, 2)
    changed = (lab != labels).float().mean().item()
    assert 0.0 < changed < 0.1
    assert (out - images).abs().mean() < 0.05


def test_plan_semantics_someof_0_to_4_random_order():
    plan = Augmenter().plan(20000, 0)
    fired = Augmenter(AugmentConfig(flip_p=1.0)).plan(20000, 0)
    counts = (fired >= 0).sum(1)
    assert set(counts.tolist()) == {0, 1, 2, 3, 4}
    freq = torch.bincount(counts, minlength=5).float() / 20000
    assert torch.allclose(freq, torch.full((5,), 0.2), atol=0.015)
    for row in fired[:500]:
        ops = row[row >= 0].tolist()
        assert len(ops) == len(set(ops))                  # distinct children
        assert (row[: len(ops)] >= 0).all()               # applied first to last
    first = fired[:, 0][fired[:, 0] >= 0]
    assert torch.allclose(torch.bincount(first, minlength=10).float() / len(first), torch.full((10,), 0.1),
                          atol=0.015)                     # random order: every child can come first
    flips = [OPS.index("flipud"), OPS.index("fliplr")]
    picked = torch.isin(fired, torch.tensor(flips)).sum().item()
    kept = torch.isin(plan, torch.tensor(flips)).sum().item()
    assert kept / picked == pytest.approx(0.5, abs=0.03)  # a picked Flipud(0.5) flips half the time


def test_deterministic_given_generator_and_random_otherwise():
    images, labels = batch(6, 32, 32)
    aug = Augmenter()
    a = aug(images, labels, torch.Generator().manual_seed(5))
    b = aug(images, labels, torch.Generator().manual_seed(5))
    c = aug(images, labels, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    g = torch.Generator().manual_seed(5)
    assert not torch.equal(aug(images, labels, g)[0], aug(images, labels, g)[0])


def test_out_size_resizes_and_normalize():
    images, labels = batch(2, 20, 20)
    out, lab = Augmenter(AugmentConfig(max_ops=0, out_size=7))(images, labels, 0)
    assert out.shape == (2, 1, 7, 7) and lab.shape == (2, 7, 7)
    assert out[0, 0, 0, 0] == pytest.approx(images[0, 0, 0, 0].item()) and lab[1, -1, -1] == labels[1, -1, -1]
    assert resize_labels(torch.arange(4)[None, None].repeat(1, 4, 1), (4, 7))[0, 0].tolist() == \
        [0, 0, 1, 2, 2, 2, 3]
    torch.testing.assert_close(normalize(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([-1.0, 0.0, 1.0]))


def test_config_validation_and_round_trip():
    cfg = AugmentConfig(mode="corrected", out_size=224, blur_reference_size=512)
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError):
        AugmentConfig(mode="strong")
    with pytest.raises(ConfigError):
        AugmentConfig(ops=("flipud", "mixup"))
    with pytest.raises(ConfigError):
        Augmenter()(torch.zeros(2, 1, 8, 8), torch.zeros(3, 8, 8, dtype=torch.long))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda():
    images, labels = batch(8, 64, 64)
    out, lab = Augmenter()(images.cuda(), labels.cuda(), torch.Generator("cuda").manual_seed(0))
    assert out.is_cuda and lab.is_cuda and lab.min() >= 0 and lab.max() <= 8
