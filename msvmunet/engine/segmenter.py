"""One checkpoint or an ensemble, applied to arrays and files: preprocessing, TTA, post-processing.

    seg = Segmenter("final.pt", device="cuda", tta=True)
    labels = seg(volume)                               # (Z, H, W) or (H, W) raw intensities -> same shape
    labels, probs = seg(volume, probabilities=True)    # probs: (C, Z, H, W) or (C, H, W) float32
    labels = seg.predict_file("scan.nii.gz")           # a NIfTI, an image or a DICOM series folder

``predict``, ``evaluate`` and the Python API all segment through this class, so they agree.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from ..data.nifti import channel_files
from ..errors import CheckpointError, ConfigError, DataError
from ..models.checkpoints import load_file, model_from_checkpoint, network_size
from .inference import pick_device, predict_volume

PathLike = str | os.PathLike
NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
PRESETS = ("synapse", "acdc")


def input_kind(path: Path) -> str | None:
    """``"nifti"``, ``"image"``, ``"dicom"`` (a folder holding DICOM files) or None."""
    if path.is_dir():
        from ..data.dicom import is_dicom_folder

        return "dicom" if is_dicom_folder(path) else None
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(IMAGE_SUFFIXES):
        return "image"
    return None


# ----------------------------------------------------------------------------- checkpoints


def load_for_inference(checkpoint: PathLike, device: str | torch.device = "cpu", backend: str = "auto"):
    """(model in eval mode on ``device``, the checkpoint dict) from an msvmunet checkpoint."""
    obj = load_file(checkpoint)
    model = model_from_checkpoint(obj, str(checkpoint)).eval().to(device)
    model.set_scan_backend(backend)
    return model, obj


def checkpoint_paths(checkpoints: PathLike | Sequence[PathLike]) -> list[Path]:
    """Checkpoint files; a folder stands for the ``*.pt`` files inside it (sorted)."""
    items = [checkpoints] if isinstance(checkpoints, (str, os.PathLike)) else list(checkpoints)
    paths: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            found = sorted(item.glob("*.pt"))
            if not found:
                raise CheckpointError(f"{item}: a folder without .pt checkpoints; "
                                      "give checkpoint files or a folder of them")
            paths += found
        elif input_kind(item) is not None:
            raise CheckpointError(f"{item} is a scan, not a checkpoint; on the command line, list the inputs "
                                  "before --checkpoint")
        else:
            paths.append(item)
    if not paths:
        raise CheckpointError("no checkpoint given")
    return paths


def _stored_settings(ckpt: dict, model: torch.nn.Module) -> dict[str, Any]:
    """What the members of an ensemble must share."""
    return {"classes": model.num_classes, "class names": (ckpt.get("preprocessing") or {}).get("class_names"),
            "network size": network_size(ckpt, default=None), "preprocessing": ckpt.get("preprocessing")}


def _check_agreement(paths: Sequence[Path], settings: Sequence[dict[str, Any]]) -> None:
    for path, other in zip(paths[1:], settings[1:]):
        for key, value in settings[0].items():
            if other[key] != value:
                raise ConfigError(f"{paths[0]} and {path} differ in {key} ({_short(value)} vs {_short(other[key])}); "
                                  "an ensemble needs checkpoints of the same classes and preprocessing")


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def preset_preprocessing(name: str, size: int):
    """The preprocessing of a published dataset (``"synapse"`` or ``"acdc"``) at network size ``size``."""
    from ..data.preprocessing import acdc_preprocessing, synapse_preprocessing

    presets = {"synapse": synapse_preprocessing, "acdc": acdc_preprocessing}
    if name not in presets:
        raise ConfigError(f"unknown preprocessing {name!r}; use one of {sorted(presets)}")
    return presets[name](size)


def _preprocessing(stored: dict | None, override: Any, size: int):
    from ..data.preprocessing import Preprocessing

    if isinstance(override, Preprocessing):
        return override
    if override:
        return preset_preprocessing(override, size)
    return Preprocessing.from_dict(stored) if stored else None


# ----------------------------------------------------------------------------- post-processing


def keep_largest_component(labels: np.ndarray, classes: Iterable[int]) -> np.ndarray:
    """A copy of ``labels`` (2-D or 3-D) where each class of ``classes`` keeps only its largest connected
    component (full connectivity: faces, edges and corners); the other components become background."""
    from scipy import ndimage

    out = labels.copy()
    structure = ndimage.generate_binary_structure(labels.ndim, labels.ndim)
    for c in classes:
        components, n = ndimage.label(labels == c, structure)
        if n > 1:
            largest = int(np.bincount(components.ravel())[1:].argmax()) + 1
            out[(components > 0) & (components != largest)] = 0
    return out


def resolve_classes(spec: bool | str | Sequence[int | str] | None, class_names: Sequence[str]) -> tuple[int, ...]:
    """Foreground class indices from True / ``"all"`` (every foreground class), names or indices
    (a sequence, or one comma-separated string); () for None/False."""
    if spec is None or spec is False:
        return ()
    if spec is True or spec == "all":
        return tuple(range(1, len(class_names)))
    items = [s.strip() for s in spec.split(",") if s.strip()] if isinstance(spec, str) else list(spec)
    out = []
    for item in items:
        if isinstance(item, str) and item in class_names:
            index = class_names.index(item)
        elif str(item).isdigit():
            index = int(item)
        else:
            raise ConfigError(f"keep-largest: unknown class {item!r}; use names {list(class_names[1:])} or indices "
                              f"1..{len(class_names) - 1} (on the command line: --keep-largest=CLASSES)")
        if not 1 <= index < len(class_names):
            raise ConfigError(f"keep-largest: class {index} is not a foreground class (1..{len(class_names) - 1})")
        out.append(index)
    return tuple(dict.fromkeys(out))


# ----------------------------------------------------------------------------- the segmenter


def _same_grid(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """Another channel's NIfTI volume, which must have the first channel's shape."""
    from ..data.io import read_nifti

    raw = read_nifti(path)[0]
    if raw.shape != shape:
        raise DataError(f"{path}: shape {raw.shape} differs from its channel 0's {shape}; channels must share a grid")
    return raw


@dataclass
class FileResult:
    """One segmented input. ``label`` is in the file's own array order (nibabel's for volumes);
    ``image`` and ``pred`` are the (D, H, W) network-order image in [0, 1] and its labels;
    ``source``: a DICOM series' datasets in slice order."""

    kind: str
    label: np.ndarray
    image: np.ndarray
    pred: np.ndarray
    affine: np.ndarray | None = None
    header: Any = None
    source: list | None = None


class Segmenter:
    """Segment with one checkpoint, or average the softmax of several (a folder stands for its ``*.pt``).

    tta: average over the mirrorings none, x, y, xy (one forward batch per net).
    keep_largest: classes (names or indices, or ``"all"``) that keep only their largest connected component.
    preprocessing: ``"synapse"``/``"acdc"`` or a :class:`~msvmunet.data.Preprocessing`, for checkpoints
        that store none; image_size: the network's input side, for checkpoints that store none.
    batch_size: images per forward pass (TTA's mirrored copies included).
    """

    def __init__(self, checkpoints: PathLike | Sequence[PathLike], *, device: str = "auto", tta: bool = False,
                 keep_largest: bool | str | Sequence[int | str] | None = None, preprocessing: Any = None,
                 image_size: int | None = None, precision: str = "auto", batch_size: int = 32,
                 backend: str = "auto") -> None:
        self.paths = checkpoint_paths(checkpoints)
        dev = pick_device(device)
        loaded = [load_for_inference(p, dev, backend) for p in self.paths]
        settings = [_stored_settings(ckpt, model) for model, ckpt in loaded]
        _check_agreement(self.paths, settings)
        self.models = [model for model, _ in loaded]
        self.checkpoint = loaded[0][1]
        self.num_classes: int = self.models[0].num_classes
        self.size = int(image_size or settings[0]["network size"] or 0)
        if not self.size:
            raise ConfigError(f"{self.paths[0]} stores no network input size (converted from the official code?); "
                              "give it: --image-size 224 (image_size=224) for a model trained at 224 x 224")
        self._preprocessing = _preprocessing(self.checkpoint.get("preprocessing"), preprocessing, self.size)
        if self._preprocessing is not None and self._preprocessing.num_classes != self.num_classes:
            raise ConfigError(f"the preprocessing names {self._preprocessing.num_classes} classes but "
                              f"{self.paths[0]} predicts {self.num_classes}")
        names = self._preprocessing.class_names if self._preprocessing else tuple(map(str, range(self.num_classes)))
        self.class_names: tuple[str, ...] = tuple(names)
        self.keep_largest = resolve_classes(keep_largest, self.class_names)
        self.tta, self.precision, self.batch_size = tta, precision, batch_size
        unflipped = [p for p, (_, ckpt) in zip(self.paths, loaded)
                     if (ckpt.get("train_config") or {}).get("augment") is False]
        if tta and unflipped:
            warnings.warn(f"{unflipped[0]} was trained without augmentation (no flips): averaging over mirrored "
                          "copies (TTA) can lower its accuracy", stacklevel=2)

    @property
    def preprocessing(self):
        """The intensity normalisation and slicing of raw scans (stored, or given)."""
        if self._preprocessing is None:
            raise ConfigError(f"{self.paths[0]} stores no preprocessing (converted from the official code?); "
                              "pass --preprocessing synapse or --preprocessing acdc (preprocessing=...)")
        return self._preprocessing

    def describe(self) -> str:
        """The inference settings beyond one plain forward pass ('' when none)."""
        parts = [f"ensemble of {len(self.models)} checkpoints"] if len(self.models) > 1 else []
        parts += ["test-time augmentation (mirrorings none, x, y, xy)"] if self.tta else []
        return ", ".join(parts)

    # ------------------------------------------------------------------ prepared images

    def segment_prepared(self, image: np.ndarray, *, probabilities: bool = False, postprocess: bool = True):
        """image: (D, H, W) in [0, 1] -> labels (D, H, W), and the softmax (D, C, H, W) with ``probabilities``."""
        mean, std = (self._preprocessing.mean, self._preprocessing.std) if self._preprocessing else (0.5, 0.5)
        result = predict_volume(self.models, image, size=self.size, batch_size=self.batch_size,
                                precision=self.precision, mean=mean, std=std, tta=self.tta,
                                probabilities=probabilities)
        labels, probs = result if probabilities else (result, None)
        if postprocess:
            labels = self.postprocess(labels)
        return (labels, probs) if probabilities else labels

    def postprocess(self, labels: np.ndarray) -> np.ndarray:
        """Keep the largest connected component of the ``keep_largest`` classes (nothing when none)."""
        return keep_largest_component(labels, self.keep_largest) if self.keep_largest else labels

    # ------------------------------------------------------------------ arrays and files

    def __call__(self, volume: np.ndarray, *, probabilities: bool = False):
        """volume: raw intensities (Z, H, W), slices along the first axis, or one (H, W) slice ->
        labels of the same shape; with ``probabilities`` also the softmax (C, Z, H, W) / (C, H, W)."""
        volume = np.asarray(volume)
        if volume.ndim not in (2, 3):
            raise DataError(f"Segmenter expects a (Z, H, W) volume or an (H, W) slice, got shape {volume.shape}")
        image = self.preprocessing.normalize_intensity(volume if volume.ndim == 3 else volume[None])
        result = self.segment_prepared(image, probabilities=probabilities)
        labels, probs = result if probabilities else (result, None)
        if volume.ndim == 2:
            labels, probs = labels[0], None if probs is None else probs[0]
        if probs is None:
            return labels
        return labels, np.moveaxis(probs, -3, 0)

    def predict_file(self, path: PathLike) -> np.ndarray:
        """Labels of a NIfTI file or a DICOM series folder (nibabel's array order), or of an image (H, W)."""
        return self.segment_file(path).label

    def segment_file(self, path: PathLike) -> FileResult:
        path = Path(path)
        kind = input_kind(path)
        if kind == "image":  # as the network was trained: grey (H, W), or colour (3, H, W) for RGB image sets
            from ..data.image_folders import read_image

            image = read_image(path, 3 if self.preprocessing.channels == 3 else 1)[None]
            pred = self.segment_prepared(image)
            shown = image.mean(axis=1) if image.ndim == 4 else image  # pictures: (D, H, W)
            return FileResult(kind, pred[0], shown, pred)
        if kind == "nifti":
            from ..data.io import read_nifti

            raw, affine, header = read_nifti(path, with_header=True)
            source = None
        elif kind == "dicom":
            from ..data.dicom import nifti_header, read_dicom_series

            raw, affine, source = read_dicom_series(path, with_datasets=True)
            header = nifti_header(affine)
        else:
            raise DataError(f"{path}: not a NIfTI (.nii, .nii.gz), image (.png, .jpg, ...) or DICOM series folder")
        prep = self.preprocessing
        image = prep.apply(raw, affine)
        shown = image
        if prep.channels > 1 and kind == "nifti":  # one file per channel (nnU-Net): (D, C, H, W)
            image = np.stack([image] + [prep.apply(_same_grid(p, raw.shape), affine)
                                        for p in channel_files(path, prep.channels)[1:]], axis=1)
            shown = image.mean(axis=1)
        pred = self.segment_prepared(image)
        label = prep.restore(pred, affine, raw.shape).astype(np.uint8 if self.num_classes <= 256 else np.int16)
        return FileResult(kind, label, shown, pred, affine, header, source)
