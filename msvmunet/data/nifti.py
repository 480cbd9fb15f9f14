"""Any labelled NIfTI dataset in the nnU-Net raw layout.

::

    ROOT/dataset.json                 {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, ...},
                                       "file_ending": ".nii.gz"}   (nnU-Net v1's {"0": "background"} also read)
    ROOT/imagesTr/<case>_0000.nii.gz  one channel per case
    ROOT/labelsTr/<case>.nii.gz       class indices 0..C-1
    ROOT/imagesTs, ROOT/labelsTs      optional labelled test split

Volumes are preprocessed with a :class:`Preprocessing` (by default: channel ``CT`` -> HU window
[-125, 275]; anything else -> MR percentile normalisation; slices along nibabel axis 2) and kept
in memory for training, sliced along the chosen axis; evaluation yields whole volumes with their
voxel spacing.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import DataError
from .base import SliceDataset, Volume, select_cases
from .io import check_image, check_label, check_same_shape, read_nifti
from .preprocessing import Preprocessing

SPLIT_DIRS = {"train": ("imagesTr", "labelsTr"), "test": ("imagesTs", "labelsTs")}


def is_nifti(root: Path) -> bool:
    return (root / "dataset.json").is_file() or (root / "imagesTr").is_dir()


def read_dataset_json(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: not found; an nnU-Net raw dataset needs a dataset.json with 'labels'") from None
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: unreadable dataset.json ({err}); fix the JSON") from err
    if not isinstance(meta, dict) or not isinstance(meta.get("labels"), dict):
        raise DataError(f"{path}: needs a 'labels' mapping, e.g. {{\"background\": 0, \"liver\": 1}}")
    return meta


def class_names_from(labels: dict, where: str) -> tuple[str, ...]:
    """nnU-Net v2 ``{name: value}`` or v1 ``{"value": name}`` -> names ordered by value 0..C-1."""
    if all(str(k).isdigit() for k in labels):
        by_value = {int(k): str(v) for k, v in labels.items()}
    else:
        by_value = {}
        for name, value in labels.items():
            if not isinstance(value, int):
                raise DataError(f"{where}: label {name!r} maps to {value!r}; only plain class indices are "
                                "supported (no region-based labels)")
            by_value[value] = str(name)
    if sorted(by_value) != list(range(len(by_value))) or len(by_value) < 2:
        raise DataError(f"{where}: label values {sorted(by_value)} must be 0..C-1 with C >= 2, background 0")
    return tuple(by_value[i] for i in range(len(by_value)))


def default_preprocessing(meta: dict, class_names: Sequence[str]) -> Preprocessing:
    channels = meta.get("channel_names", meta.get("modality", {"0": "?"}))
    if len(channels) != 1:
        raise DataError(f"dataset.json lists {len(channels)} channels {channels}; only one channel is supported")
    modality = str(next(iter(channels.values()))).strip().upper()
    return Preprocessing(normalization="ct" if modality == "CT" else "mr", class_names=tuple(class_names))


class NiftiData:
    """An nnU-Net raw dataset: split ``train`` (imagesTr/labelsTr) and, if labelled, ``test``."""

    kind = "nifti"

    def __init__(self, root: str | Path, preprocessing: Preprocessing | None = None) -> None:
        self.root = Path(root)
        meta = read_dataset_json(self.root / "dataset.json")
        where = str(self.root / "dataset.json")
        names = class_names_from(meta["labels"], where)
        self.file_ending = str(meta.get("file_ending", ".nii.gz"))
        if preprocessing is None:
            preprocessing = default_preprocessing(meta, names)
        elif preprocessing.num_classes != len(names):
            preprocessing = replace(preprocessing, class_names=names)
        self.preprocessing = preprocessing
        self.num_classes = len(names)
        self.class_names = names
        self.splits = tuple(s for s, (_, lab) in SPLIT_DIRS.items() if (self.root / lab).is_dir())
        if "train" not in self.splits:
            raise DataError(f"{self.root}: no labelsTr folder; an nnU-Net raw dataset needs imagesTr and labelsTr")

    @staticmethod
    def case_of(name: str) -> str:
        return name

    def image_path(self, split: str, case: str) -> Path:
        return self.root / SPLIT_DIRS[self._split(split)][0] / f"{case}_0000{self.file_ending}"

    def path(self, split: str, case: str) -> Path:
        """The label file of a case."""
        return self.root / SPLIT_DIRS[self._split(split)][1] / f"{case}{self.file_ending}"

    def names(self, split: str = "train") -> list[str]:
        """Case names with a label file, each checked to have its image."""
        folder = self.root / SPLIT_DIRS[self._split(split)][1]
        cases = sorted(p.name[: -len(self.file_ending)] for p in folder.glob(f"*{self.file_ending}")
                       if not p.name.startswith("."))
        if not cases:
            raise DataError(f"{folder}: no *{self.file_ending} label files; the {split} split is empty")
        missing = [c for c in cases if not self.image_path(split, c).is_file()]
        if missing:
            raise DataError(f"{folder}: {len(missing)} label(s) without an image, e.g. {missing[:10]} "
                            f"(looked for {self.image_path(split, missing[0])}); add the images or remove "
                            "the labels")
        return cases

    cases = names

    def read(self, split: str, case: str) -> tuple[np.ndarray, np.ndarray, dict[str, object]]:
        """Raw image and label arrays (nibabel order) and ``{"affine": (4, 4)}``."""
        image, affine = read_nifti(self.image_path(split, case))
        label, _ = read_nifti(self.path(split, case))
        return image, label, {"affine": affine}

    def load(self, split: str, case: str) -> Volume:
        """One case preprocessed: (D, H, W) image in [0, 1], label, spacing (z, y, x)."""
        image, label, attrs = self.read(split, case)
        where = f"{self.image_path(split, case)} / {self.path(split, case).name}"
        check_same_shape(image, label, where)
        check_image(image, str(self.image_path(split, case)))
        label = check_label(label, self.num_classes, str(self.path(split, case)))
        prep, affine = self.preprocessing, attrs["affine"]
        return Volume(case=case, image=prep.apply(image, affine), label=prep.apply_label(label, affine),
                      spacing=prep.spacing(affine))

    def slices(self, split: str = "train", *, cases: Sequence[str] | None = None,
               exclude_cases: Sequence[str] | None = None, size: int = 224) -> SliceDataset:
        """2-D slices of the selected cases along ``preprocessing.axis`` (volumes held in memory)."""
        names = select_cases(self.names(split), self.case_of, cases, exclude_cases, str(self.root))
        return _NiftiSlices([self.load(split, c) for c in names], size, self.num_classes)

    def volumes(self, split: str = "train", *, cases: Sequence[str] | None = None,
                exclude_cases: Sequence[str] | None = None) -> Iterator[Volume]:
        for case in select_cases(self.names(split), self.case_of, cases, exclude_cases, str(self.root)):
            yield self.load(split, case)

    def _split(self, split: str) -> str:
        if split not in SPLIT_DIRS:
            raise DataError(f"{self.root}: nnU-Net datasets have the splits {tuple(SPLIT_DIRS)}, not {split!r}")
        return split


class _NiftiSlices(SliceDataset):
    def __init__(self, volumes: list[Volume], size: int, num_classes: int) -> None:
        super().__init__(size, num_classes)
        self.volumes = [replace(v, label=v.label.astype(np.uint8 if num_classes <= 256 else np.int64))
                        for v in volumes]
        self.index = [(v, d) for v in range(len(volumes)) for d in range(volumes[v].image.shape[0])]

    def __len__(self) -> int:
        return len(self.index)

    def load_slice(self, index: int):
        v, d = self.index[index]
        vol = self.volumes[v]
        return vol.image[d], vol.label[d], vol.case, f"{vol.case}_slice{d:03d}", vol.case
