"""What every dataset format shares: the volume record, the 2-D slice dataset, case names."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from .io import check_image, check_label, check_same_shape
from .resize import resize_images, resize_labels


@dataclass
class Volume:
    """One 3-D case for evaluation.

    image: (D, H, W) float32 in [0, 1], or (D, C, H, W) for C channels (RGB, MR modalities);
    label: (D, H, W) int64 class indices (None if unlabelled); spacing: voxel size in mm along (z, y, x) = (D, H, W), or None when the files do not say.
    """

    case: str
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float] | None = None


def select_cases(names: Sequence[str], case_of, cases: Sequence[str] | None,
                 exclude: Sequence[str] | None, where: str) -> list[str]:
    """The names whose case is in ``cases`` (all when None) and not in ``exclude``."""
    known = {case_of(n) for n in names}
    for label, wanted in (("cases", cases), ("exclude_cases", exclude)):
        unknown = sorted(set(wanted or ()) - known)
        if unknown:
            raise DataError(f"{where}: {label} {unknown} are not in the dataset (it has {sorted(known)[:10]}"
                            f"{' ...' if len(known) > 10 else ''}); check the case names")
    keep = set(known if cases is None else cases) - set(exclude or ())
    out = [n for n in names if case_of(n) in keep]
    if not out:
        raise DataError(f"{where}: no slices left after selecting cases; the selection is empty")
    return out


class SliceDataset(Dataset):
    """2-D training samples of fixed size, so that a ``DataLoader`` can batch them.

    Item: ``{"image": (C, S, S) float32 in [0, 1] (not normalised), "label": (S, S) int64,
    "case": str, "name": str}``. Slices of another size are resized to S here (image bicubic,
    label nearest, corners aligned, image clamped back into [0, 1]); augmentation comes later,
    batched, on the device (see :mod:`msvmunet.data.augment`).
    """

    def __init__(self, size: int, num_classes: int) -> None:
        if size < 8:
            raise DataError(f"slice size {size} is too small; use at least 8")
        self.size = int(size)
        self.num_classes = int(num_classes)

    def __len__(self) -> int:  # pragma: no cover - subclasses
        raise NotImplementedError

    def load_slice(self, index: int) -> tuple[np.ndarray, np.ndarray, str, str, str]:
        """(image (H, W) or (C, H, W), label (H, W), case, name, file it came from)."""
        raise NotImplementedError  # pragma: no cover

    def __getitem__(self, index: int) -> dict[str, object]:
        image, label, case, name, where = self.load_slice(index)
        if image.ndim not in (2, 3):
            raise DataError(f"{where}: expected a 2-D slice (H, W) or (C, H, W), got shape {image.shape}")
        check_same_shape(image[0] if image.ndim == 3 else image, label, where)
        image = torch.from_numpy(check_image(image, where)).reshape(1, -1, *image.shape[-2:])
        label = torch.from_numpy(check_label(label, self.num_classes, where))[None]
        image = resize_images(image, self.size).clamp_(0.0, 1.0)
        label = resize_labels(label, self.size)
        return {"image": image[0], "label": label[0], "case": case, "name": name}


class FileSlices(SliceDataset):
    """The slices ``names`` of ``split``, one per file, read with ``data.read`` (any reader of this package)."""

    def __init__(self, data, split: str, names: Sequence[str], size: int) -> None:
        super().__init__(size, data.num_classes)
        self.data, self.split, self.names = data, split, list(names)

    def __len__(self) -> int:
        return len(self.names)

    def load_slice(self, index: int):
        name = self.names[index]
        image, label, _ = self.data.read(self.split, name)
        return image, label, self.data.case_of(name), name, str(self.data.path(self.split, name))


def slice_number(name: str) -> int:
    """The trailing number of a slice name (``case0005_slice012`` -> 12)."""
    match = re.search(r"(\d+)$", name)
    return int(match.group(1)) if match else 0


def stack_slices(items: list[tuple[int, np.ndarray, np.ndarray]], where: str) -> tuple[np.ndarray, np.ndarray]:
    """(slice number, image (H, W), label (H, W)) in any order -> (D, H, W) image and label."""
    items = sorted(items, key=lambda t: t[0])
    shapes = {img.shape for _, img, _ in items}
    if len(shapes) != 1:
        raise DataError(f"{where}: its slices have different shapes {sorted(shapes)}; cannot stack a volume")
    return np.stack([i for _, i, _ in items]), np.stack([lab for _, _, lab in items])


def read_checked(data, split: str, name: str, ndim: int) -> tuple[np.ndarray, np.ndarray, dict[str, object]]:
    """``data.read(split, name)`` validated: ``ndim``-D finite float32 image, int64 label in range."""
    image, label, attrs = data.read(split, name)
    where = str(data.path(split, name))
    if image.ndim != ndim:
        kind = "(D, H, W) volume" if ndim == 3 else "(H, W) slice"
        raise DataError(f"{where}: expected a {kind}, got shape {image.shape}")
    check_same_shape(image, label, where)
    return check_image(image, where), check_label(label, data.num_classes, where), attrs


def volume_from_file(data, split: str, name: str, case: str) -> Volume:
    """A Volume from a file holding a whole (D, H, W) case, spacing from its ``spacing`` attribute."""
    image, label, attrs = read_checked(data, split, name, ndim=3)
    spacing = attrs.get("spacing")
    spacing = tuple(float(s) for s in spacing) if isinstance(spacing, list) and len(spacing) == 3 else None
    return Volume(case=case, image=image, label=label, spacing=spacing)


def stacked_volumes(data, split: str, names: Sequence[str], volume_of) -> Iterator[Volume]:
    """Volumes assembled from 2-D slice files, grouped by ``volume_of(name)``, ordered by slice number."""
    groups: dict[str, list[str]] = defaultdict(list)
    for name in names:
        groups[volume_of(name)].append(name)
    for volume, members in groups.items():
        items = [(slice_number(n), *read_checked(data, split, n, ndim=2)[:2]) for n in members]
        image, label = stack_slices(items, f"{data.root} {split} volume {volume}")
        yield Volume(case=volume, image=image, label=label, spacing=None)
