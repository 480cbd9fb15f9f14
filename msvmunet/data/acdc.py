"""ACDC cardiac MR in the MT-UNet layout.

::

    ROOT/train/*.npz, ROOT/valid/*.npz       2-D slices: keys img (H, W) float, label (H, W) 0..3
    ROOT/test/*.npz                          volumes (case_XXX_volume_ED.npz / _ES): img, label (D, H, W);
                                             optional key spacing (z, y, x) in mm
    ROOT/lists/{train,valid,test}.txt        file names per split (optional: else the folders are listed)

List files are also looked for in ``lists/lists_ACDC``, ``lists_ACDC`` and ROOT. A slice's volume
is its name without the slice number (``case_001_ED_slice_03`` -> ``case_001_ED``), its case the
patient (``case_001``), so that held-out cases never share a patient with training.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import DataError
from .base import FileSlices, SliceDataset, Volume, select_cases, stacked_volumes, volume_from_file
from .io import read_list, read_npz
from .preprocessing import Preprocessing, acdc_preprocessing
from .synapse import check_names_exist, find_list

SPLITS = ("train", "valid", "test")
LIST_DIRS = ("lists/lists_ACDC", "lists_ACDC", "lists", ".")


def is_acdc(root: Path) -> bool:
    return sum((root / s).is_dir() for s in SPLITS) >= 2 and not (root / "dataset.json").is_file()


def volume_of(name: str) -> str:
    """``case_001_ED_slice_03`` or ``case_001_sliceED_3`` -> ``case_001_ED``; volumes keep their name."""
    if "_volume_" in name:
        return name.replace("_volume_", "_")
    stem = re.sub(r"_?\d+$", "", name).replace("slice", "")
    return re.sub(r"_+", "_", stem).strip("_")


def case_of(name: str) -> str:
    """The patient: ``case_001`` for every slice and volume of patient 1."""
    match = re.match(r"(case_?\d+)", name)
    return match.group(1) if match else volume_of(name)


class ACDCData:
    """An ACDC dataset folder: ``train`` and ``valid`` hold slices, ``test`` volumes."""

    kind = "acdc"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not any((self.root / s).is_dir() for s in SPLITS):
            raise DataError(f"{self.root}: no train/valid/test folder; is this an ACDC dataset? "
                            "(make one with `msvmunet prepare acdc`)")
        self.preprocessing: Preprocessing = acdc_preprocessing()
        self.num_classes = self.preprocessing.num_classes
        self.class_names = self.preprocessing.class_names
        self.case_of = case_of
        self.splits = tuple(s for s in SPLITS if (self.root / s).is_dir())

    def path(self, split: str, name: str) -> Path:
        return self.root / self._split(split) / f"{name}.npz"

    def names(self, split: str) -> list[str]:
        """File names (without ``.npz``) of a split, checked to exist."""
        split = self._split(split)
        list_file = find_list(self.root, f"{split}.txt", LIST_DIRS)
        if list_file is not None:
            names = [Path(n).name.removesuffix(".npz") for n in read_list(list_file)]
            check_names_exist(names, lambda n: self.path(split, n), str(list_file))
            return names
        folder = self.root / split
        names = sorted(p.stem for p in folder.glob("*.npz") if not p.name.startswith("."))
        if not names:
            raise DataError(f"{folder}: no .npz files and no {split}.txt; the {split} split is empty")
        return names

    def cases(self, split: str = "train") -> list[str]:
        return sorted({case_of(n) for n in self.names(split)})

    def read(self, split: str, name: str) -> tuple[np.ndarray, np.ndarray, dict[str, object]]:
        """Raw ``img`` and ``label`` of one file, and ``{"spacing": [z, y, x]}`` when stored."""
        path = self.path(split, name)
        arrays = read_npz(path, ("img", "label"), optional=("spacing",))
        attrs: dict[str, object] = {}
        if "spacing" in arrays:
            attrs["spacing"] = [float(v) for v in arrays["spacing"].ravel()]
        return arrays["img"], arrays["label"], attrs

    def slices(self, split: str = "train", *, cases: Sequence[str] | None = None,
               exclude_cases: Sequence[str] | None = None, size: int = 224) -> SliceDataset:
        if self._split(split) == "test":
            raise DataError(f"{self.root}: the ACDC test split holds volumes; train on 'train' "
                            "(and 'valid'), evaluate with volumes('test')")
        names = select_cases(self.names(split), case_of, cases, exclude_cases, str(self.root / split))
        return FileSlices(self, split, names, size)

    def volumes(self, split: str = "test", *, cases: Sequence[str] | None = None,
                exclude_cases: Sequence[str] | None = None) -> Iterator[Volume]:
        """Test volumes as stored, or the slices of ``train``/``valid`` stacked per volume."""
        split = self._split(split)
        names = select_cases(self.names(split), case_of, cases, exclude_cases, str(self.root / split))
        if split == "test":
            for name in names:
                yield volume_from_file(self, "test", name, volume_of(name))
        else:
            yield from stacked_volumes(self, split, names, volume_of)

    def _split(self, split: str) -> str:
        split = {"val": "valid", "validation": "valid"}.get(split, split)
        if split not in SPLITS:
            raise DataError(f"{self.root}: ACDC has the splits {SPLITS}, not {split!r}")
        return split

