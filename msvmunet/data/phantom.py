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
gets noise. The same seed always gives the same data, whatever the number of processes.

:func:`make_phantom` writes the cases through the same code as ``prepare synapse`` (as if they
were BTCV scans), optionally also as an nnU-Net raw dataset of NIfTI files, one process per case.

Speed: each organ is drawn only inside its bounding box, and the smooth noise is filtered on a
coarser in-plane grid and interpolated; a 123 x 512 x 512 case takes a few seconds.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from ..errors import ConfigError
from .io import reporting_disk_full, write_nifti, write_text
from .prepare import PrepareSummary, progress_bar, write_synapse_case, write_synapse_lists
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


@dataclass(frozen=True)
class _Shape:
    """One organ as drawn for one case; coordinates are fractions of the width, height and depth."""

    organ: _Organ
    cx: float
    cy: float
    rx: float
    ry: float
    zc: float
    hz: float
    lobes: tuple[tuple[float, float], ...]   # (amplitude, phase) of the boundary's harmonics 2, 3, 5
    phase: float                            # of the pancreas' lobulation

    def box(self, d: int, h: int, w: int) -> tuple[slice, slice, slice]:
        """Index ranges (z, y, x) outside which the organ has no voxel."""
        if self.organ.label == 6:   # |u| < 1.15 and |v| < 1.15 (1.2 + 0.5 * 1.15) on a parabola
            x0, x1 = self.cx - 1.15 * self.rx, self.cx + 1.15 * self.rx
            y0, y1 = self.cy - 0.02 - 2.05 * self.ry, self.cy + 0.06 + 2.05 * self.ry
        else:                       # the harmonics shrink the radius by at most prod(1 - amplitude)
            grow = 1.0 / float(np.prod([1.0 - a for a, _ in self.lobes])) if self.lobes else 1.0
            drift = 0.025  # 0.02 (z - zc), with |z - zc| <= 1.05
            x0, x1 = self.cx - self.rx * grow - drift, self.cx + self.rx * grow + drift
            y0, y1 = self.cy - self.ry * grow, self.cy + self.ry * grow
        z0, z1 = (0.0, 1.0) if self._full_z else (self.zc - self.hz, self.zc + self.hz)
        return _span(z0, z1, d), _span(y0, y1, h), _span(x0, x1, w)

    @property
    def _full_z(self) -> bool:
        return self.organ.z_range == (0.0, 1.0)

    def draw(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boolean mask on the grid (z, y, x) and the normalised radius (0 centre, 1 boundary)."""
        if self._full_z:
            profile = np.ones_like(z)
        else:
            profile = np.sqrt(np.clip(1.0 - ((z - self.zc) / self.hz) ** 2, 0.0, None))
        u = (x - self.cx) / self.rx
        if self.organ.label == 6:  # pancreas: a band bending along a parabola, thicker at the tail
            v = (y - (self.cy + 0.06 * u ** 2 - 0.02)) / (self.ry * (1.2 + 0.5 * u))
            radial = np.sqrt(u ** 2 + v ** 2) + 0.15 * np.sin(40.0 * x + self.phase) * np.sin(30.0 * y)
        else:
            dx = x - self.cx - 0.02 * (z - self.zc)
            radial = np.sqrt((dx / self.rx) ** 2 + ((y - self.cy) / self.ry) ** 2)
            if self.lobes:
                angle = np.arctan2(y - self.cy, dx)
                for m, (amplitude, phase) in zip((2, 3, 5), self.lobes):
                    radial = radial * (1.0 + amplitude * np.cos(m * angle + phase + 2.0 * z))
        return radial < profile, radial / np.maximum(profile, 1e-3)


def _span(lo: float, hi: float, n: int) -> slice:
    """The indices i of a grid of n cells whose centre (i + 0.5) / n may lie in [lo, hi] (one spare each side)."""
    return slice(min(max(int(np.floor(lo * n - 0.5)), 0), n), max(min(int(np.ceil(hi * n - 0.5)) + 1, n), 0))


def _draw_shape(organ: _Organ, rng: np.random.Generator, scale: float, shift: tuple[float, float]) -> _Shape:
    jitter = rng.uniform(-0.02, 0.02, size=2)
    rx, ry = (float(r * scale * rng.uniform(0.85, 1.15)) for r in organ.radii)
    z0, z1 = (v + rng.uniform(-0.05, 0.05) for v in organ.z_range)
    lobes: tuple[tuple[float, float], ...] = ()
    phase = 0.0
    if organ.label == 6:
        phase = float(rng.uniform(0, 6.28))
    elif organ.lobes:
        lobes = tuple((float(organ.lobes * rng.uniform(0.3, 1.0) / m), float(rng.uniform(0, 6.28)))
                      for m in (2, 3, 5))
    return _Shape(organ, float(organ.center[0] + shift[0] + jitter[0]), float(organ.center[1] + shift[1] + jitter[1]),
                  rx, ry, float((z0 + z1) / 2), float(max((z1 - z0) / 2, 0.05)), lobes, phase)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int, int], sigma: Sequence[float]) -> np.ndarray:
    """(D, H, W) float32 zero-mean noise of about unit std, smooth over ``sigma`` (z, y, x) voxels.

    Filtered on an in-plane grid f times coarser (f = sigma // 2, so the coarse field stays smooth
    over 2 of its cells) and interpolated linearly: at 512 x 512, 4 to 64 times fewer voxels to filter.
    """
    d, h, w = shape
    f = max(1, int(min(sigma[1], sigma[2]) // 2))
    coarse = rng.standard_normal((d, -(-h // f), -(-w // f)), dtype=np.float32)
    field = gaussian_filter(coarse, (sigma[0], sigma[1] / f, sigma[2] / f))
    field /= max(float(field.std()), 1e-6)
    return _upsample(_upsample(field, 1, h, f), 2, w, f)


def _upsample(a: np.ndarray, axis: int, n: int, f: int) -> np.ndarray:
    """Linear interpolation along ``axis`` from cells f times larger onto n cells, centres aligned,
    edges held; output cell k * f + j lies (j + 0.5) / f - 0.5 cells from input cell k."""
    if f == 1:
        return a
    pad = [(0, 0)] * a.ndim
    pad[axis] = (1, 1)
    padded = np.pad(a, pad, mode="edge")                     # padded[k + 1] = a[k]

    def cut(start: int, stop: int, step: int = 1) -> tuple[slice, ...]:
        return tuple(slice(start, stop, step) if k == axis else slice(None) for k in range(a.ndim))

    out = np.empty(a.shape[:axis] + (n,) + a.shape[axis + 1:], dtype=a.dtype)
    for j in range(f):
        count, t = len(range(j, n, f)), (j + 0.5) / f - 0.5
        first, weight = (0, t + 1.0) if t < 0 else (1, t)   # between padded[first + k] and the next
        target = out[cut(j, n, f)]
        np.multiply(padded[cut(first, first + count)], np.float32(1.0 - weight), out=target)
        target += np.float32(weight) * padded[cut(first + 1, first + 1 + count)]
    return out


def phantom_case(rng: np.random.Generator, slices: int = 48, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """One case: (D, H, W) float32 HU volume and (D, H, W) uint8 labels 0..8."""
    d, h, w = slices, size, size
    z = ((np.arange(d, dtype=np.float32) + 0.5) / d)[:, None, None]
    y = ((np.arange(h, dtype=np.float32) + 0.5) / h)[None, :, None]
    x = ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, None, :]
    scale = float(rng.uniform(0.9, 1.1))
    shift = tuple(float(s) for s in rng.uniform(-0.03, 0.03, size=2))
    fine = _smooth_noise(rng, (d, h, w), (0.7, 1.0 * size / 128, 1.0 * size / 128))
    coarse = _smooth_noise(rng, (d, h, w), (2.0, 4.0 * size / 128, 4.0 * size / 128))

    # Body: fat with a muscle wall, a spine, air outside; the same in every slice.
    bx, by = 0.44 * scale + rng.uniform(-0.02, 0.02), 0.34 * scale + rng.uniform(-0.02, 0.02)
    body_r = np.sqrt(((x[0] - 0.5) / bx) ** 2 + ((y[0] - 0.52) / by) ** 2)           # (H, W)
    hu = coarse * 20.0
    hu -= 95.0
    hu[:, body_r >= 1.0] = -1000.0
    wall = (body_r > 0.86) & (body_r < 0.95)
    hu[:, wall] = 45.0 + 10.0 * fine[:, wall]
    spine = np.sqrt(((x[0] - 0.5) / 0.06) ** 2 + ((y[0] - 0.80 - shift[1]) / 0.055) ** 2) < 1.0
    hu[:, spine] = 500.0 + 80.0 * fine[:, spine]
    label = np.zeros((d, h, w), dtype=np.uint8)

    # Unlabelled bowel loops in the lower abdomen: the organs' intensities without their labels.
    for _ in range(int(rng.integers(4, 8))):
        cx, cy = rng.uniform(0.3, 0.7), rng.uniform(0.35, 0.6)
        zc, rz, r = rng.uniform(0.0, 0.45), rng.uniform(0.1, 0.25), rng.uniform(0.03, 0.06)
        box = _span(zc - rz, zc + rz, d), _span(cy - r, cy + r, h), _span(cx - r, cx + r, w)
        inside = ((x[:, :, box[2]] - cx) / r) ** 2 + ((y[:, box[1]] - cy) / r) ** 2 + ((z[box[0]] - zc) / rz) ** 2 < 1.0
        hu[box][inside] = float(rng.uniform(30.0, 65.0)) + 12.0 * fine[box][inside]

    organs = [(_IVC, _draw_shape(_IVC, rng, scale, shift), float(rng.uniform(-8.0, 8.0)))]
    for organ in _ORGANS:
        organs.append((organ, _draw_shape(organ, rng, scale, shift), float(rng.uniform(-8.0, 8.0))))
    for organ, shape, offset in organs:
        box = shape.box(d, h, w)
        inside, radial = shape.draw(x[:, :, box[2]], y[:, box[1]], z[box[0]])
        texture = (coarse if organ.label == 5 else fine)[box]
        value = organ.hu + offset + organ.texture * texture
        if organ.label in (3, 4):  # medulla: darker core
            value[radial < 0.55] -= 55.0
        if organ.label == 8:       # stomach: wall, fluid lumen, gas on top
            lumen = np.broadcast_to(radial < 0.72, value.shape)
            value[lumen] = 12.0 + 6.0 * texture[lumen]
            gas = lumen & (y[:, box[1]] < organ.center[1] + shift[1] - 0.03)
            value[gas] = -700.0
        hu[box][inside] = value[inside]
        label[box][inside] = organ.label
    hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(12.0)
    return hu, label


@dataclass(frozen=True)
class _CaseJob:
    """What one process needs to make and write one case."""

    out: Path
    case: str
    seed: np.random.SeedSequence
    slices: int
    size: int
    test: bool
    nnunet: bool


def _write_case(job: _CaseJob) -> np.ndarray:
    """Make one case, write its files; its voxel count per class (9,)."""
    hu, label = phantom_case(np.random.default_rng(job.seed), slices=job.slices, size=job.size)
    prep = synapse_preprocessing()
    affine = _affine(job.size, job.slices)
    # As a scanner would store it: nibabel order (x, y, z), which prepare transposes back.
    raw_hu, raw_label = hu.transpose(2, 1, 0), label.transpose(2, 1, 0)
    write_synapse_case(job.out, job.case, prep.apply(raw_hu, affine), prep.apply_label(raw_label, affine),
                       test=job.test, spacing=prep.spacing(affine))
    if job.nnunet:
        images, labels = ("imagesTs", "labelsTs") if job.test else ("imagesTr", "labelsTr")
        nn = job.out / "nnunet"
        write_nifti(nn / images / f"{job.case}_0000.nii.gz", np.round(raw_hu).astype(np.int16), affine)
        write_nifti(nn / labels / f"{job.case}.nii.gz", raw_label, affine)
    return np.bincount(label.ravel(), minlength=len(SYNAPSE_CLASSES))


def _affine(size: int, slices: int) -> np.ndarray:
    return np.diag([400.0 / size, 400.0 / size, 2.5 * 48 / slices, 1.0])


def default_workers(jobs: int) -> int:
    """Processes for ``jobs`` independent jobs: the cores this process may use, at most one per job."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, jobs))


def _run(jobs: list[_CaseJob], workers: int) -> Iterator[tuple[int, np.ndarray]]:
    """(index, class counts) of each job as it finishes; ``workers`` processes (1: this one)."""
    if workers <= 1:
        for i, job in enumerate(jobs):
            yield i, _write_case(job)
        return
    # Ctrl-C reaches the whole process group: the workers ignore it, this process stops the pool
    # (the cases under way are finished, so no temporary file is left behind).
    with ProcessPoolExecutor(workers, mp_context=_context(), initializer=signal.signal,
                             initargs=(signal.SIGINT, signal.SIG_IGN)) as pool:
        pending: dict[Future, int] = {pool.submit(_write_case, job): i for i, job in enumerate(jobs)}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield pending.pop(future), future.result()
        finally:
            for future in pending:
                future.cancel()


def _context() -> multiprocessing.context.BaseContext:
    """Workers forked from a server that imported this module once (not from this process, whose
    threads a fork would copy in an unknown state); spawned where there is no fork."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def make_phantom(out_dir: str | Path, *, cases: int = 12, test_cases: int | None = None, seed: int = 0,
                 size: int = 128, slices: int = 48, nnunet: bool = False,
                 progress: bool = False, workers: int | None = 1) -> PrepareSummary:
    """Write a phantom data set in the Synapse layout (and, with ``nnunet``, in ``out_dir/nnunet``).

    cases: number of volumes; the last ``test_cases`` (default a third) form ``test_vol_h5`` (and
    nnU-Net's ``imagesTs`` / ``labelsTs``), the others ``train_npz`` (``imagesTr`` / ``labelsTr``).
    size: in-plane size (H = W); slices: D. workers: processes, one case each (None: one per core).
    Same arguments, same files, whatever ``workers``.
    """
    if cases < 2 or size < 16 or slices < 4:
        raise ConfigError(f"make_phantom: need cases >= 2, size >= 16, slices >= 4 "
                          f"(got {cases}, {size}, {slices})")
    n_test = max(1, cases // 3) if test_cases is None else int(test_cases)
    if not 0 < n_test < cases:
        raise ConfigError(f"make_phantom: test_cases={n_test} must be between 1 and cases - 1 = {cases - 1}")
    if workers is not None and workers < 1:
        raise ConfigError(f"make_phantom: workers={workers} must be at least 1")
    out = Path(out_dir)
    seeds = np.random.SeedSequence(seed).spawn(cases)
    jobs = [_CaseJob(out, f"case{i + 1:04d}", seeds[i], slices, size, i >= cases - n_test, nnunet)
            for i in range(cases)]
    workers = default_workers(cases) if workers is None else min(workers, cases)
    summary = PrepareSummary(out=out)
    counts = np.zeros((cases, len(SYNAPSE_CLASSES)), dtype=np.int64)
    finished = np.zeros(cases, dtype=bool)
    # bytes of a case at most: float32 + uint8 slices; NIfTI int16 + uint8 before compression
    case_bytes = slices * size * size * (5 + 3 * nnunet)
    with reporting_disk_full(out, lambda: int((~finished).sum()) * case_bytes), \
            progress_bar(cases, "phantom", progress) as bar:
        for i, class_counts in _run(jobs, workers):
            counts[i], finished[i] = class_counts, True
            bar.update(1)
        train = {job.case: slices for job in jobs if not job.test}
        test = [job.case for job in jobs if job.test]
        write_synapse_lists(out, train, test)
        if nnunet:
            meta = {"name": "phantom", "channel_names": {"0": "CT"},
                    "labels": {name: i for i, name in enumerate(SYNAPSE_CLASSES)},
                    "numTraining": len(train), "file_ending": ".nii.gz"}
            write_text(out / "nnunet" / "dataset.json", json.dumps(meta, indent=2) + "\n")
    summary.written = [job.case for job in jobs]
    summary.class_voxels = {name: int(n) for name, n in zip(SYNAPSE_CLASSES, counts.sum(axis=0))}
    summary.splits = {"train": sorted(train), "test": sorted(test)}
    summary.items = {"train": sum(train.values()), "test": len(test)}
    return summary
