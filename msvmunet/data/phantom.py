"""A synthetic abdominal CT data set that a segmentation network can learn, made in seconds.

Each case is a (D, H, W) volume in Hounsfield units holding a body (fat, a muscle wall, a spine,
unlabelled bowel loops) and the 8 Synapse organs, in Synapse's label order:

    1 aorta: a thin bright tube through every slice     5 liver: large, lobed, mottled
    2 gallbladder: small, dark, next to the liver       6 pancreas: a thin curved band, lobulated
    3 left / 4 right kidney: bright cortex, darker      7 spleen: medium, smooth
      medulla, at different heights                     8 stomach: wall around a dark lumen with gas

Left and right: as in a real abdomen, the aorta runs a little to the patient's left of the midline
and an unlabelled inferior vena cava (a darker vessel) to its right, through every slice. The two
kidneys are near mirror images of each other, so in the slices below the liver the vessels are
what tells the left kidney from the right one once the paper's augmentation has flipped an image.

Organ sizes, positions and shapes vary per case; organs span only part of the slices (some slices
have none of some organs); intensities overlap (kidney cortex vs. aorta, liver vs. spleen vs.
pancreas vs. bowel, gallbladder vs. stomach lumen), so no threshold separates them; every voxel
gets noise. The same seed always gives the same data.

:func:`make_phantom` writes the cases through the same code as ``prepare synapse`` (as if they
were BTCV scans), optionally also as an nnU-Net raw dataset of NIfTI files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from ..errors import ConfigError
from .io import write_nifti, write_text
from .prepare import PrepareSummary, write_synapse_case, write_synapse_lists
from .preprocessing import SYNAPSE_CLASSES, synapse_preprocessing


@dataclass(frozen=True)
class _Organ:
    label: int
    center: tuple[float, float]     # (x, y) as fractions of the width / height
    radii: tuple[float, float]      # semi-axes (x, y) as fractions of the width
    z_range: tuple[float, float]    # first / last fraction of the slices it spans
    hu: float                       # mean intensity
    texture: float                  # amplitude of its smooth texture (HU)
    lobes: float                    # amplitude of the boundary's irregularity


# Image left = patient right (radiological view); rows grow towards the back.
_ORGANS = (
    _Organ(5, (0.30, 0.44), (0.17, 0.15), (0.40, 1.00), 62.0, 14.0, 0.10),   # liver
    _Organ(7, (0.75, 0.50), (0.065, 0.085), (0.55, 0.95), 48.0, 6.0, 0.05),  # spleen
    _Organ(8, (0.62, 0.34), (0.11, 0.075), (0.50, 0.95), 42.0, 8.0, 0.08),   # stomach
    _Organ(3, (0.68, 0.64), (0.05, 0.07), (0.18, 0.55), 175.0, 10.0, 0.04),  # left kidney
    _Organ(4, (0.32, 0.65), (0.05, 0.068), (0.12, 0.48), 170.0, 10.0, 0.04), # right kidney
    _Organ(6, (0.55, 0.55), (0.11, 0.025), (0.35, 0.62), 46.0, 14.0, 0.0),   # pancreas (a band)
    _Organ(2, (0.37, 0.53), (0.035, 0.045), (0.36, 0.58), 18.0, 4.0, 0.06),  # gallbladder
    _Organ(1, (0.53, 0.65), (0.032, 0.032), (0.00, 1.00), 190.0, 8.0, 0.0),  # aorta
)
# the inferior vena cava: unlabelled, on the patient's right of the aorta, oval, darker
_IVC = _Organ(0, (0.435, 0.64), (0.036, 0.026), (0.00, 1.00), 120.0, 8.0, 0.0)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: Sequence[float]) -> np.ndarray:
    """Zero-mean, unit-std smooth noise."""
    field = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return field / max(float(field.std()), 1e-6)


def phantom_case(rng: np.random.Generator, slices: int = 48, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """One case: (D, H, W) float32 HU volume and (D, H, W) uint8 labels 0..8."""
    d, h, w = slices, size, size
    z = ((np.arange(d, dtype=np.float32) + 0.5) / d)[:, None, None]
    y = ((np.arange(h, dtype=np.float32) + 0.5) / h)[None, :, None]
    x = ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, None, :]
    scale = rng.uniform(0.9, 1.1)
    shift = rng.uniform(-0.03, 0.03, size=2)
    fine = _smooth_noise(rng, (d, h, w), (0.7, 1.0 * size / 128, 1.0 * size / 128))
    coarse = _smooth_noise(rng, (d, h, w), (2.0, 4.0 * size / 128, 4.0 * size / 128))

    # Body: fat with a muscle wall, a spine, air outside.
    bx, by = 0.44 * scale + rng.uniform(-0.02, 0.02), 0.34 * scale + rng.uniform(-0.02, 0.02)
    body_r = np.sqrt(((x - 0.5) / bx) ** 2 + ((y - 0.52) / by) ** 2)
    hu = np.full((d, h, w), -1000.0, dtype=np.float32)
    hu = np.where(body_r < 1.0, -95.0 + 20.0 * coarse, hu)
    hu = np.where((body_r > 0.86) & (body_r < 0.95), 45.0 + 10.0 * fine, hu)
    spine = np.sqrt(((x - 0.5) / 0.06) ** 2 + ((y - 0.80 - shift[1]) / 0.055) ** 2) < 1.0
    hu = np.where(spine, 500.0 + 80.0 * fine, hu)
    label = np.zeros((d, h, w), dtype=np.uint8)

    # Unlabelled bowel loops in the lower abdomen: the organs' intensities without their labels.
    for _ in range(int(rng.integers(4, 8))):
        cx, cy = rng.uniform(0.3, 0.7), rng.uniform(0.35, 0.6)
        zc, rz, r = rng.uniform(0.0, 0.45), rng.uniform(0.1, 0.25), rng.uniform(0.03, 0.06)
        inside = ((x - cx) / r) ** 2 + ((y - cy) / r) ** 2 + ((z - zc) / rz) ** 2 < 1.0
        hu = np.where(inside, rng.uniform(30.0, 65.0) + 12.0 * fine, hu)

    inside, _ = _organ_mask(_IVC, rng, x, y, z, scale, shift)
    hu = np.where(inside, _IVC.hu + rng.uniform(-8.0, 8.0) + _IVC.texture * fine, hu)

    for organ in _ORGANS:
        inside, radial = _organ_mask(organ, rng, x, y, z, scale, shift)
        value = organ.hu + rng.uniform(-8.0, 8.0) + organ.texture * (coarse if organ.label == 5 else fine)
        if organ.label in (3, 4):  # medulla: darker core
            value = np.where(radial < 0.55, value - 55.0, value)
        if organ.label == 8:       # stomach: wall, fluid lumen, gas on top
            lumen = radial < 0.72
            value = np.where(lumen, 12.0 + 6.0 * fine, value)
            value = np.where(lumen & (y < organ.center[1] + shift[1] - 0.03), -700.0, value)
        hu = np.where(inside, value, hu)
        label[inside] = organ.label
    hu += rng.normal(0.0, 12.0, size=hu.shape).astype(np.float32)
    return hu.astype(np.float32), label


def _organ_mask(organ: _Organ, rng: np.random.Generator, x: np.ndarray, y: np.ndarray, z: np.ndarray,
                scale: float, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (D, H, W) mask of one organ and its normalised radius (0 centre, 1 boundary)."""
    jitter = rng.uniform(-0.02, 0.02, size=2)
    cx = organ.center[0] + shift[0] + jitter[0]
    cy = organ.center[1] + shift[1] + jitter[1]
    rx, ry = (r * scale * rng.uniform(0.85, 1.15) for r in organ.radii)
    z0, z1 = (v + rng.uniform(-0.05, 0.05) for v in organ.z_range)
    zc, hz = (z0 + z1) / 2, max((z1 - z0) / 2, 0.05)
    profile = np.sqrt(np.clip(1.0 - ((z - zc) / hz) ** 2, 0.0, None)) if organ.z_range != (0.0, 1.0) \
        else np.ones_like(z)
    if organ.label == 6:  # pancreas: a band bending along a parabola, thicker at the tail
        cy_z = cy + 0.06 * ((x - cx) / rx) ** 2 - 0.02
        radial = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy_z) / (ry * (1.2 + 0.5 * (x - cx) / rx))) ** 2)
        radial = radial + 0.15 * np.sin(40.0 * x + rng.uniform(0, 6.28)) * np.sin(30.0 * y)
    else:
        drift = 0.02 * (z - zc)
        radial = np.sqrt(((x - cx - drift) / rx) ** 2 + ((y - cy) / ry) ** 2)
        if organ.lobes:
            angle = np.arctan2(y - cy, x - cx - drift)
            for m in (2, 3, 5):
                radial = radial * (1.0 + organ.lobes * rng.uniform(0.3, 1.0) / m
                                   * np.cos(m * angle + rng.uniform(0, 6.28) + 2.0 * z))
    boundary = profile if organ.label != 1 else profile * 1.0
    inside = radial < boundary
    return inside, radial / np.maximum(boundary, 1e-3)


def make_phantom(out_dir: str | Path, *, cases: int = 12, test_cases: int | None = None, seed: int = 0,
                 size: int = 128, slices: int = 48, nnunet: bool = False,
                 progress: bool = False) -> PrepareSummary:
    """Write a phantom data set in the Synapse layout (and, with ``nnunet``, in ``out_dir/nnunet``).

    cases: number of volumes; the last ``test_cases`` (default a third) form ``test_vol_h5``, the
    others ``train_npz``. size: in-plane size (H = W); slices: D. Same arguments, same files.
    """
    if cases < 2 or size < 16 or slices < 4:
        raise ConfigError(f"make_phantom: need cases >= 2, size >= 16, slices >= 4 "
                          f"(got {cases}, {size}, {slices})")
    n_test = max(1, cases // 3) if test_cases is None else int(test_cases)
    if not 0 < n_test < cases:
        raise ConfigError(f"make_phantom: test_cases={n_test} must be between 1 and cases - 1 = {cases - 1}")
    out = Path(out_dir)
    prep = synapse_preprocessing()
    spacing_xyz = (400.0 / size, 400.0 / size, 2.5 * 48 / slices)
    affine = np.diag([*spacing_xyz, 1.0])
    summary = PrepareSummary(out=out)
    train: dict[str, int] = {}
    test: list[str] = []
    seeds = np.random.SeedSequence(seed).spawn(cases)
    names = [f"case{i + 1:04d}" for i in range(cases)]
    iterator = names
    if progress:
        from tqdm import tqdm

        iterator = tqdm(names, desc="phantom", unit="case")
    for i, case in enumerate(iterator):
        hu, label = phantom_case(np.random.default_rng(seeds[i]), slices=slices, size=size)
        # As a scanner would store it: nibabel order (x, y, z), which prepare transposes back.
        raw_hu, raw_label = hu.transpose(2, 1, 0), label.transpose(2, 1, 0)
        is_test = i >= cases - n_test
        write_synapse_case(out, case, prep.apply(raw_hu, affine), prep.apply_label(raw_label, affine),
                           test=is_test, spacing=prep.spacing(affine))
        (test.append(case) if is_test else train.__setitem__(case, slices))
        if nnunet:
            write_nifti(out / "nnunet" / "imagesTr" / f"{case}_0000.nii.gz", np.round(raw_hu).astype(np.int16), affine)
            write_nifti(out / "nnunet" / "labelsTr" / f"{case}.nii.gz", raw_label, affine)
        summary.written.append(case)
        summary.count(label, prep.class_names)
    write_synapse_lists(out, train, test)
    if nnunet:
        meta = {"name": "phantom", "channel_names": {"0": "CT"},
                "labels": {name: i for i, name in enumerate(SYNAPSE_CLASSES)},
                "numTraining": cases, "file_ending": ".nii.gz"}
        write_text(out / "nnunet" / "dataset.json", json.dumps(meta, indent=2) + "\n")
    summary.splits = {"train": sorted(train), "test": sorted(test)}
    summary.items = {"train": sum(train.values()), "test": len(test)}
    return summary
