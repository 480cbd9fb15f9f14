"""Any labelled NIfTI dataset in the nnU-Net raw layout.

::

    ROOT/dataset.json                 {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, ...},
                                       "file_ending": ".nii.gz"}   (nnU-Net v1's {"0": "background"} also read)
    ROOT/imagesTr/<case>_0000.nii.gz  channel 0 of a case; <case>_0001.nii.gz channel 1, ... (one file per
                                      entry of channel_names: the model takes that many input channels)
    ROOT/labelsTr/<case>.nii.gz       class indices 0..C-1
    ROOT/imagesTs, ROOT/labelsTs      optional labelled test split

Volumes are preprocessed with a :class:`Preprocessing` (by default: channel ``CT`` -> HU window
[-125, 275]; anything else -> MR percentile normalisation, each channel on its own; slices along
nibabel axis 2) and kept in memory for training, sliced along the chosen axis; evaluation yields whole volumes with their
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


def channel_names(meta: dict, where: str) -> list[str]:
    """The modalities of ``channel_names`` (v2) or ``modality`` (v1), ordered by channel number 0..N-1."""
    channels = meta.get("channel_names", meta.get("modality", {"0": "?"}))
    if not isinstance(channels, dict) or sorted(map(str, channels)) != [str(i) for i in range(len(channels))] \
            or not channels:
        raise DataError(f"{where}: channel_names must map 0..N-1 to modalities, e.g. {{\"0\": \"T1\", \"1\": \"T2\"}}; "
                        f"got {channels!r}")
    return [str(channels[k]) for k in sorted(channels, key=int)]


def default_preprocessing(meta: dict, class_names: Sequence[str], where: str = "dataset.json") -> Preprocessing:
    modalities = [m.strip().upper() for m in channel_names(meta, where)]
    ct = all(m == "CT" for m in modalities)
    return Preprocessing(normalization="ct" if ct else "mr", class_names=tuple(class_names), channels=len(modalities))


class NiftiData:
    """An nnU-Net raw dataset: split ``train`` (imagesTr/labelsTr) and, if labelled, ``test``."""

    kind = "nifti"

    def __init__(self, root: str | Path, preprocessing: Preprocessing | None = None) -> None:
        self.root = Path(root)
        meta = read_dataset_json(self.root / "dataset.json")
        where = str(self.root / "dataset.json")
        names = class_names_from(meta["labels"], where)
        self.file_ending = str(meta.get("file_ending", ".nii.gz"))
        channels = len(channel_names(meta, where))
        if preprocessing is None:
            preprocessing = default_preprocessing(meta, names, where)
        elif preprocessing.num_classes != len(names) or preprocessing.channels != channels:
            preprocessing = replace(preprocessing, class_names=names, channels=channels)
        self.preprocessing = preprocessing
        self.num_classes = len(names)
        self.class_names = names
        self.splits = tuple(s for s, (_, lab) in SPLIT_DIRS.items() if (self.root / lab).is_dir())
        if "train" not in self.splits:
            raise DataError(f"{self.root}: no labelsTr folder; an nnU-Net raw dataset needs imagesTr and labelsTr")

    @staticmethod
    def case_of(name: str) -> str:
        return name

    def image_path(self, split: str, case: str, channel: int = 0) -> Path:
        return self.root / SPLIT_DIRS[self._split(split)][0] / f"{case}_{channel:04d}{self.file_ending}"

    def image_paths(self, split: str, case: str) -> list[Path]:
        return [self.image_path(split, case, c) for c in range(self.preprocessing.channels)]

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
        missing = [(c, p) for c in cases for p in self.image_paths(split, c) if not p.is_file()]
        if missing:
            raise DataError(f"{folder}: {len(missing)} image file(s) missing, e.g. {[p.name for _, p in missing[:10]]} "
                            f"(for the labels of {sorted({c for c, _ in missing})[:10]}); add the images or remove "
                            "the labels")
        return cases

    cases = names

    def read(self, split: str, case: str) -> tuple[np.ndarray, np.ndarray, dict[str, object]]:
        """Raw image (nibabel order (X, Y, Z); (C, X, Y, Z) for C channels), label (X, Y, Z), ``{"affine": (4, 4)}``."""
        paths = self.image_paths(split, case)
        images = [read_nifti(p) for p in paths]
        for path, (array, _) in zip(paths[1:], images[1:]):
            if array.shape != images[0][0].shape:
                raise DataError(f"{path}: shape {array.shape} differs from channel 0's {images[0][0].shape}; "
                                "every channel of a case must have the same voxels")
        label, _ = read_nifti(self.path(split, case))
        image = images[0][0] if len(images) == 1 else np.stack([a for a, _ in images])
        return image, label, {"affine": images[0][1]}

    def load(self, split: str, case: str) -> Volume:
        """One case preprocessed: (D, H, W) image in [0, 1] ((D, C, H, W) for C channels), label, spacing (z, y, x)."""
        image, label, attrs = self.read(split, case)
        where = f"{self.image_path(split, case)} / {self.path(split, case).name}"
        check_same_shape(image if image.ndim == 3 else image[0], label, where)
        check_image(image, str(self.image_path(split, case)))
        label = check_label(label, self.num_classes, str(self.path(split, case)))
        prep, affine = self.preprocessing, attrs["affine"]
        image = prep.apply(image, affine) if image.ndim == 3 else np.stack([prep.apply(c, affine) for c in image], 1)
        return Volume(case=case, image=image, label=prep.apply_label(label, affine), spacing=prep.spacing(affine))

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


def channel_files(first: str | Path, channels: int) -> list[Path]:
    """A case's files, one per channel, in the nnU-Net layout, from its channel-0 file (``case_0000.nii.gz``
    -> ``case_0000.nii.gz``, ``case_0001.nii.gz``, ...)."""
    import re

    first = Path(first)
    match = re.match(r"(.*)_0000(\.nii(?:\.gz)?)$", first.name)
    if match is None:
        raise DataError(f"{first}: the model takes {channels} channels; give each case's channel-0 file "
                        f"(<case>_0000.nii.gz), with <case>_0001.nii.gz ... beside it, as nnU-Net names them")
    paths = [first.with_name(f"{match[1]}_{k:04d}{match[2]}") for k in range(channels)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{first}: the model takes {channels} channels, but {', '.join(missing)} is missing beside it")
    return paths


def is_other_channel(path: str | Path, files: Sequence[str | Path]) -> bool:
    """Whether ``path`` is a channel file other than channel 0 (``case_0001.nii.gz``, ...) whose channel-0 file
    is among ``files``: in the nnU-Net layout such a file belongs to that case, not a case of its own."""
    import re

    path = Path(path)
    match = re.match(r"(.*)_(\d{4})(\.nii(?:\.gz)?)$", path.name)
    if match is None or match[2] == "0000":
        return False
    return path.with_name(f"{match[1]}_0000{match[3]}") in {Path(f) for f in files}
