"""How a raw scan becomes the (D, H, W) array the network's slices come from, and the way back.

One :class:`Preprocessing` travels with a model (it is a plain dict in the checkpoint), so that the
``prepare`` commands, training on NIfTI data and ``predict`` on a new scan all run the same code:

    volume, affine = read_nifti("scan.nii.gz")          # nibabel's array, e.g. (X, Y, Z)
    image = prep.apply(volume, affine)                   # (D, H, W) float32 in [0, 1]
    ... network on image[d] resized to prep.size, normalised with prep.mean / prep.std ...
    label = prep.restore(prediction, affine, volume.shape)   # back to (X, Y, Z)

Axis order: the slicing axis comes first and the two others follow in reverse, so that with the
default ``axis=2`` the array is nibabel's transposed by (2, 1, 0) — SimpleITK's (slice, row,
column) order, the order of the released Synapse files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError, DataError

SYNAPSE_CLASSES = ("background", "aorta", "gallbladder", "left_kidney", "right_kidney",
                   "liver", "pancreas", "spleen", "stomach")
ACDC_CLASSES = ("background", "RV", "Myo", "LV")

NORMALIZATIONS = ("ct", "mr")


@dataclass(frozen=True)
class Preprocessing:
    """Intensity normalisation, slicing and network input settings of one dataset.

    normalization: ``"ct"``: clip to ``window`` (HU) and scale linearly to [0, 1];
        ``"mr"``: clip to the volume's ``percentiles`` and scale that range to [0, 1].
    axis: the axis of the (optionally reoriented) nibabel array along which slices are taken.
    canonical: reorient to the closest RAS orientation first (for mixed-orientation data sets);
        off for Synapse/ACDC, whose released files are plain transposes of the raw arrays.
    size: the network's in-plane input size S (slices are resized to S x S).
    mean, std: normalisation of the [0, 1] image for the network: ``(x - mean) / std``.
    class_names: name of each class index, background first.
    channels: image channels the network is fed (1: grey, CT, one MR sequence; 3: RGB; N: N modalities).
    """

    normalization: str = "ct"
    window: tuple[float, float] = (-125.0, 275.0)
    percentiles: tuple[float, float] = (0.5, 99.5)
    axis: int = 2
    canonical: bool = False
    size: int = 224
    mean: float = 0.5
    std: float = 0.5
    class_names: tuple[str, ...] = SYNAPSE_CLASSES
    channels: int = 1

    def __post_init__(self) -> None:
        # Accept lists (from a dict) and store tuples, so that the object stays hashable.
        for name in ("window", "percentiles", "class_names"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.normalization not in NORMALIZATIONS:
            raise ConfigError(f"Preprocessing.normalization={self.normalization!r}; use one of {NORMALIZATIONS}")
        lo, hi = self.window
        if not hi > lo:
            raise ConfigError(f"Preprocessing.window={self.window}: the upper bound must exceed the lower")
        p_lo, p_hi = self.percentiles
        if not 0.0 <= p_lo < p_hi <= 100.0:
            raise ConfigError(f"Preprocessing.percentiles={self.percentiles}: need 0 <= low < high <= 100")
        if self.axis not in (0, 1, 2):
            raise ConfigError(f"Preprocessing.axis={self.axis}: use 0, 1 or 2")
        if self.size < 8 or self.std <= 0:
            raise ConfigError(f"Preprocessing: size={self.size} must be >= 8 and std={self.std} positive")
        if self.channels < 1:
            raise ConfigError(f"Preprocessing.channels={self.channels}: need at least one channel")
        if len(self.class_names) < 2:
            raise ConfigError("Preprocessing.class_names: name the background and at least one class")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def model_channels(self) -> int:
        """The network stem's input channels: 3 for grey (repeated to 3, as for ImageNet weights), else C."""
        return 3 if self.channels == 1 else self.channels

    # ------------------------------------------------------------------ dict round trip

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (str/int/float/bool/list), safe for ``torch.load(weights_only=True)``."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Preprocessing":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"Preprocessing: unknown key(s) {sorted(unknown)}; known keys are {sorted(known)}")
        return cls(**data)

    # ------------------------------------------------------------------ forward

    def apply(self, volume: np.ndarray, affine: np.ndarray | None = None) -> np.ndarray:
        """Raw volume (nibabel order, e.g. (X, Y, Z)) -> (D, H, W) float32 in [0, 1]."""
        image = self.to_network_order(np.asarray(volume), affine)
        return self.normalize_intensity(image)

    def apply_label(self, label: np.ndarray, affine: np.ndarray | None = None) -> np.ndarray:
        """Raw label volume -> (D, H, W), the voxels of :meth:`apply`'s output (values unchanged)."""
        return self.to_network_order(np.asarray(label), affine)

    def normalize_intensity(self, image: np.ndarray) -> np.ndarray:
        """Any-shape intensities -> float32 in [0, 1] (CT window or MR percentile range)."""
        image = np.asarray(image, dtype=np.float32)
        if not np.isfinite(image).all():
            raise DataError("the volume holds NaN/inf values; fix the scan before preprocessing it")
        if self.normalization == "ct":
            lo, hi = self.window
        else:
            lo, hi = (float(v) for v in np.percentile(image, self.percentiles))
            if hi <= lo:  # a constant volume
                return np.zeros_like(image)
        out = (np.clip(image, lo, hi) - np.float32(lo)) / np.float32(hi - lo)
        return out.astype(np.float32, copy=False)

    def to_network_order(self, volume: np.ndarray, affine: np.ndarray | None = None) -> np.ndarray:
        """Reorder the axes of a nibabel-order 3-D array to (D, H, W); no resampling."""
        if volume.ndim != 3:
            raise DataError(f"expected a 3-D volume, got shape {volume.shape}")
        if self.canonical:
            volume = _reorient(volume, _require_affine(affine), inverse=False)
        return np.ascontiguousarray(volume.transpose(self._order()))

    def spacing(self, affine: np.ndarray) -> tuple[float, float, float]:
        """Voxel spacing (mm) along (D, H, W) of :meth:`apply`'s output."""
        affine = np.asarray(affine, dtype=np.float64)
        zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        if self.canonical:
            reordered = np.empty(3)
            reordered[_orientation(affine)[:, 0].astype(int)] = zooms  # input axis i -> RAS axis ornt[i, 0]
            zooms = reordered
        return tuple(float(zooms[i]) for i in self._order())  # type: ignore[return-value]

    # ------------------------------------------------------------------ backward

    def restore(self, label: np.ndarray, affine: np.ndarray | None = None,
                shape: Sequence[int] | None = None) -> np.ndarray:
        """A (D, H, W) label array -> the raw scan's orientation and shape (nibabel order)."""
        label = np.asarray(label)
        if label.ndim != 3:
            raise DataError(f"expected a (D, H, W) label array, got shape {label.shape}")
        out = label.transpose(np.argsort(self._order()))
        if self.canonical:
            out = _reorient(out, _require_affine(affine), inverse=True)
        if shape is not None and tuple(out.shape) != tuple(shape):
            raise DataError(f"the restored label has shape {out.shape} but the scan has {tuple(shape)}; "
                            "resize predictions back to the (D, H, W) of Preprocessing.apply first")
        return np.ascontiguousarray(out)

    def _order(self) -> tuple[int, int, int]:
        others = [a for a in (2, 1, 0) if a != self.axis]
        return (self.axis, *others)  # type: ignore[return-value]


def _require_affine(affine: np.ndarray | None) -> np.ndarray:
    if affine is None:
        raise DataError("Preprocessing(canonical=True) needs the scan's affine")
    return np.asarray(affine, dtype=np.float64)


def _orientation(affine: np.ndarray) -> np.ndarray:
    from nibabel.orientations import io_orientation

    return io_orientation(affine)


def _reorient(array: np.ndarray, affine: np.ndarray, *, inverse: bool) -> np.ndarray:
    """Raw -> closest RAS orientation (``inverse=False``) or back (``inverse=True``)."""
    from nibabel.orientations import apply_orientation, axcodes2ornt, ornt_transform

    ornt = _orientation(affine)
    if inverse:
        ornt = ornt_transform(axcodes2ornt(("R", "A", "S")), ornt)
    return apply_orientation(array, ornt)


def synapse_preprocessing(size: int = 224) -> Preprocessing:
    """Synapse / BTCV abdomen CT: HU window [-125, 275] -> (x + 125) / 400, 9 classes."""
    return Preprocessing(normalization="ct", window=(-125.0, 275.0), size=size, class_names=SYNAPSE_CLASSES)


def acdc_preprocessing(size: int = 224) -> Preprocessing:
    """ACDC cine MR: per-volume 0.5/99.5 percentile range -> [0, 1], 4 classes."""
    return Preprocessing(normalization="mr", percentiles=(0.5, 99.5), size=size, class_names=ACDC_CLASSES)
