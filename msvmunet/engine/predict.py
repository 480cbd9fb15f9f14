"""Segment new scans: NIfTI volumes and DICOM series (label NIfTI aligned with the scan) or 2-D images
(index-valued PNG masks at the image's size, with a coloured preview beside them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..data.nifti import is_other_channel
from ..errors import DataError, DiskFullError, MsvmUnetError
from .evaluate import label_set
from .segmenter import IMAGE_SUFFIXES, NIFTI_SUFFIXES, PathLike, Segmenter, input_kind

LABEL_IMAGE_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")  # lossless: label values survive


class PredictionFailures(DataError):
    """Some inputs failed (the others were written); ``failures`` holds (input, reason) pairs."""

    def __init__(self, failures: list[tuple[Path, str]], total: int) -> None:
        self.failures = failures
        lines = "\n".join(f"  {path}: {why}" for path, why in failures)
        super().__init__(f"{len(failures)} of {total} inputs failed (the others were written):\n{lines}")


def _suffix_kind(path: Path) -> str | None:
    name = path.name.lower()
    return "nifti" if name.endswith(NIFTI_SUFFIXES) else "image" if name.endswith(IMAGE_SUFFIXES) else None


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", *NIFTI_SUFFIXES, *IMAGE_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name if path.is_dir() else path.stem


def collect_inputs(inputs: Iterable[PathLike]) -> list[Path]:
    """Files given directly, DICOM series folders, and the NIfTI/image files inside other folders (sorted)."""
    inputs = list(inputs)
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        kind = input_kind(path) if path.exists() else None
        if kind is not None:
            found.append(path)
        elif path.is_dir():
            found += sorted(p for p in path.iterdir() if p.is_file() and input_kind(p))
        elif path.is_file():
            raise DataError(f"{path}: not a NIfTI (.nii, .nii.gz) or image (.png, .jpg, ...) file, "
                            "nor a folder holding a DICOM series")
        else:
            raise DataError(f"{path}: no such file or folder")
    if not found:
        raise DataError(f"no NIfTI, image or DICOM files found in {', '.join(map(str, inputs))}")
    return found


def output_paths(files: Sequence[Path], output: PathLike) -> list[Path]:
    """Where each input's labels go; an output file name must suit the input (checked before any work):
    volumes (NIfTI, DICOM) -> ``.nii``/``.nii.gz``, images -> a lossless image (``.png``)."""
    output = Path(output)
    out_kind = _suffix_kind(output)
    if out_kind is None:
        return [output / (f"{_stem(f)}_seg" + (".png" if input_kind(f) == "image" else ".nii.gz")) for f in files]
    if len(files) > 1:
        raise DataError(f"-o {output}: {len(files)} inputs need an output folder, not a file name")
    in_kind = input_kind(files[0])
    if in_kind in ("nifti", "dicom") and out_kind != "nifti":
        raise DataError(f"-o {output}: {files[0]} is a volume; its labels are written as NIfTI: "
                        "name the output .nii.gz (or give a folder)")
    if in_kind == "image" and out_kind != "image":
        raise DataError(f"-o {output}: {files[0]} is a 2-D image; its labels are written as an image: "
                        "name the output .png (or give a folder)")
    if in_kind == "image" and not output.name.lower().endswith(LABEL_IMAGE_SUFFIXES):
        raise DataError(f"-o {output}: JPEG is lossy and would change label values; name the output .png")
    return [output]


def predict(
    checkpoint: PathLike | Sequence[PathLike],
    inputs: Iterable[PathLike],
    output: PathLike,
    *,
    overlay_dir: PathLike | None = None,
    preprocessing: Any = None,
    image_size: int | None = None,
    tta: bool = False,
    keep_largest: bool | str | Sequence[int | str] | None = None,
    dicom_seg: bool = False,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 32,
    backend: str = "auto",
    quiet: bool = False,
) -> list[Path]:
    """Write one label file per input (see :func:`output_paths`); ``checkpoint`` may be several files
    or a folder (an ensemble). With ``dicom_seg``, a DICOM series also gets a DICOM-SEG beside its
    NIfTI (``<name>.dcm``). A failing input does not stop the others: every good one is written,
    then :class:`PredictionFailures` lists the failed ones and why."""
    files = collect_inputs(inputs)
    files = [f for f in files if not is_other_channel(f, files)]  # nnU-Net: a case is its _0000 file
    targets = output_paths(files, output)
    seg = Segmenter(checkpoint, device=device, tta=tta, keep_largest=keep_largest, preprocessing=preprocessing,
                    image_size=image_size, precision=precision, batch_size=batch_size, backend=backend)
    if any(input_kind(f) != "image" for f in files):
        seg.preprocessing  # noqa: B018 - a checkpoint without preprocessing fails here, before any work
    colors = label_set(seg.class_names).colors
    written, failures = [], []
    for path, target in zip(files, targets):
        try:
            _predict_one(seg, path, target, overlay_dir, colors, quiet, dicom_seg)
            written.append(target)
        except DiskFullError:
            raise  # the next files would not fit either: stop, with what was written kept
        except (MsvmUnetError, OSError) as err:
            why = str(err).removeprefix(f"{path}: ")
            failures.append((path, why))
            if not quiet:
                print(f"{path.name}: FAILED: {why}")
    if failures:
        raise PredictionFailures(failures, len(files))
    return written


def _predict_one(seg: Segmenter, path: Path, target: Path, overlay_dir: PathLike | None, colors, quiet: bool,
                 dicom_seg: bool = False) -> None:
    from ..data.io import write_nifti
    from ..metrics import save_case_overlays, save_overlay

    result = seg.segment_file(path)
    if result.kind == "image":
        _write_label_image(target, result.label)
        _write_preview(target.with_name(f"{_stem(target)}_preview.png"), result.image[0], result.label, colors)
        if overlay_dir is not None:
            save_overlay(Path(overlay_dir) / f"{_stem(path)}_overlay.png", result.image[0], None, result.label, colors)
    else:
        write_nifti(target, result.label, result.affine, header=result.header)
        if dicom_seg and result.source is not None:
            from .. import __version__
            from ..data.dicom import write_dicom_seg

            write_dicom_seg(target.with_name(f"{_stem(target)}.dcm"), result.label, result.source, seg.class_names,
                            __version__)
        if overlay_dir is not None:
            save_case_overlays(overlay_dir, _stem(path), result.image, None, result.pred, colors)
    if not quiet:
        counts = np.bincount(result.pred.ravel(), minlength=seg.num_classes)
        found = ", ".join(f"{seg.class_names[c]} {counts[c]}" for c in range(1, seg.num_classes) if counts[c])
        print(f"{path.name} -> {target} ({found or 'nothing found'})")


def _write_label_image(path: Path, labels: np.ndarray) -> None:
    from PIL import Image

    from .._files import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(labels.astype(np.uint8)).save(tmp, format=Image.registered_extensions()[path.suffix.lower()])


def _write_preview(path: Path, image: np.ndarray, labels: np.ndarray, colors) -> None:
    """The image in grey with each class in its colour (half transparent): an index mask looks black."""
    from PIL import Image

    from .._files import atomic_path

    rgb = np.repeat((np.clip(image, 0.0, 1.0) * 255.0)[..., None], 3, axis=-1)
    palette = np.array([(0, 0, 0), *colors], dtype=np.float64)
    mask = labels > 0
    rgb[mask] = 0.5 * rgb[mask] + 0.5 * palette[labels[mask]]
    with atomic_path(path) as tmp:
        Image.fromarray(np.round(rgb).astype(np.uint8)).save(tmp, format="PNG")
