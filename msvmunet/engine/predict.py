"""Segment new scans: NIfTI volumes (label NIfTI with the input's affine and header) or 2-D images."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import ConfigError, DataError
from .evaluate import label_set, load_for_inference, network_size
from .inference import pick_device, predict_volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(IMAGE_SUFFIXES):
        return "image"
    return None


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", *NIFTI_SUFFIXES, *IMAGE_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def collect_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files given directly, and the NIfTI/image files inside given folders (sorted)."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.is_file() and _kind(p))
        elif path.is_file():
            if _kind(path) is None:
                raise DataError(f"{path}: not a NIfTI (.nii, .nii.gz) or image (.png, .jpg, ...) file")
            found.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    if not found:
        raise DataError(f"no NIfTI or image files found in {', '.join(map(str, inputs))}")
    return found


def _preprocessing(ckpt: dict, override: str | None):
    from ..data.preprocessing import Preprocessing, acdc_preprocessing, synapse_preprocessing

    if override:
        presets = {"synapse": synapse_preprocessing, "acdc": acdc_preprocessing}
        if override not in presets:
            raise ConfigError(f"unknown preprocessing {override!r}; use one of {sorted(presets)}")
        return presets[override]()
    if not ckpt.get("preprocessing"):
        raise ConfigError(
            "this checkpoint stores no preprocessing (it was probably converted from an official checkpoint); "
            "pass --preprocessing synapse or --preprocessing acdc"
        )
    return Preprocessing.from_dict(ckpt["preprocessing"])


def predict(
    checkpoint: str | Path,
    inputs: Iterable[str | Path],
    output: str | Path,
    *,
    overlay_dir: str | Path | None = None,
    preprocessing: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 32,
    backend: str = "auto",
    quiet: bool = False,
) -> list[Path]:
    """Write one label file per input. With one input file, ``output`` may be a file name;
    otherwise it is a folder (``<stem>_seg.nii.gz`` / ``<stem>_seg.png``)."""
    from ..data.io import read_nifti, write_nifti
    from ..metrics import save_overlay

    files = collect_inputs(inputs)
    model, ckpt = load_for_inference(checkpoint, pick_device(device), backend)
    prep = _preprocessing(ckpt, preprocessing)
    if prep.num_classes != model.num_classes:
        raise ConfigError(f"the preprocessing names {prep.num_classes} classes but the model predicts {model.num_classes}")
    size = network_size(ckpt)
    colors = label_set(prep.class_names).colors
    output = Path(output)
    single_file = len(files) == 1 and _kind(output) is not None
    written = []
    for path in files:
        kind = _kind(path)
        if kind == "nifti":
            raw, affine, header = read_nifti(path, with_header=True)
            image = prep.apply(raw, affine)
            pred = predict_volume(model, image, size=size, batch_size=batch_size, precision=precision)
            label = prep.restore(pred, affine, raw.shape).astype(np.uint8 if model.num_classes <= 256 else np.int16)
            target = output if single_file else output / f"{_stem(path)}_seg.nii.gz"
            write_nifti(target, label, affine, header=header)
            if overlay_dir is not None:
                from ..metrics import save_case_overlays

                save_case_overlays(overlay_dir, _stem(path), image, None, pred, colors)
        else:
            image = _read_image(path)
            pred = predict_volume(model, image[None], size=size, batch_size=1, precision=precision)[0]
            target = output if single_file else output / f"{_stem(path)}_seg.png"
            _write_label_png(target, pred)
            if overlay_dir is not None:
                save_overlay(Path(overlay_dir) / f"{_stem(path)}_overlay.png", image, None, pred, colors)
        written.append(target)
        if not quiet:
            counts = np.bincount(pred.ravel(), minlength=model.num_classes)
            found = ", ".join(f"{prep.class_names[c]} {counts[c]}" for c in range(1, model.num_classes) if counts[c])
            print(f"{path.name} -> {target} ({found or 'nothing found'})")
    return written


def _read_image(path: Path) -> np.ndarray:
    """A 2-D image as (H, W) float32 in [0, 1] (colour images are converted to grey)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("I;16") if img.mode.startswith("I;16") else img.convert("L")
            array = np.asarray(img, dtype=np.float32)
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"{path}: unreadable image ({err}); save it again as PNG or JPEG") from err
    return array / (65535.0 if array.max() > 255 else 255.0)


def _write_label_png(path: Path, labels: np.ndarray) -> None:
    from PIL import Image

    from .._files import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(labels.astype(np.uint8)).save(tmp, format="PNG")
