"""Synapse multi-organ CT in the TransUNet layout.

::

    ROOT/train_npz/caseXXXX_sliceYYY.npz     keys image (H, W) float32 in [0, 1], label (H, W) 0..8
    ROOT/test_vol_h5/caseXXXX.npy.h5         datasets image, label (D, H, W); optional attribute spacing (z, y, x)
    ROOT/lists/train.txt, test_vol.txt       slice names / case names (optional: else the folders are listed)

The official MSVM-UNet code names the folders ``train_slice`` and ``test_vol``; both are accepted,
and list files are looked for in ``lists/lists_Synapse``, ``lists_Synapse``, ``lists`` and ROOT.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import DataError
from .base import FileSlices, SliceDataset, Volume, select_cases, stacked_volumes, volume_from_file
from .io import read_h5, read_list, read_npz
from .preprocessing import Preprocessing, synapse_preprocessing

TRAIN_DIRS = ("train_npz", "train_slice")
TEST_DIRS = ("test_vol_h5", "test_vol")
LIST_DIRS = ("lists/lists_Synapse", "lists_Synapse", "lists", ".")
LIST_FILES = {"train": "train.txt", "test": "test_vol.txt"}


def is_synapse(root: Path) -> bool:
    return any((root / d).is_dir() for d in TRAIN_DIRS + TEST_DIRS)


def find_list(root: Path, filename: str, list_dirs: Sequence[str]) -> Path | None:
    for d in list_dirs:
        path = root / d / filename
        if path.is_file():
            return path
    return None


def check_names_exist(names: Sequence[str], path_of, where: str) -> None:
    """Raise one error naming every list entry without a file (the first ten)."""
    missing = [n for n in names if not path_of(n).is_file()]
    if missing:
        raise DataError(f"{where}: {len(missing)} name(s) have no file, e.g. {missing[:10]} "
                        f"(looked for {path_of(missing[0])}); fix the list file or restore the files")


class SynapseData:
    """A Synapse dataset folder: splits ``train`` (2-D slices) and ``test`` (3-D volumes)."""

    kind = "synapse"
    splits = ("train", "test")

    def __init__(self, root: str | Path, num_classes: int = 9) -> None:
        self.root = Path(root)
        self.train_dir = next((self.root / d for d in TRAIN_DIRS if (self.root / d).is_dir()), None)
        self.test_dir = next((self.root / d for d in TEST_DIRS if (self.root / d).is_dir()), None)
        if self.train_dir is None and self.test_dir is None:
            raise DataError(f"{self.root}: no {'/'.join(TRAIN_DIRS)} or {'/'.join(TEST_DIRS)} folder; "
                            "is this a Synapse dataset? (make one with `msvmunet prepare synapse`)")
        self.preprocessing: Preprocessing = synapse_preprocessing()
        if num_classes != self.preprocessing.num_classes:
            names = ("background", *(f"class{i}" for i in range(1, num_classes)))
            self.preprocessing = replace(self.preprocessing, class_names=names)
        self.num_classes = num_classes
        self.class_names = self.preprocessing.class_names

    # ------------------------------------------------------------------ names and files

    def path(self, split: str, name: str) -> Path:
        split = self._split(split)
        if split == "train":
            return self._folder(split) / f"{name}.npz"
        folder = self._folder(split)
        path = folder / f"{name}.npy.h5"
        return path if path.is_file() or not (folder / f"{name}.h5").is_file() else folder / f"{name}.h5"

    def names(self, split: str) -> list[str]:
        """Item names of a split: slice names (train) or case names (test), checked to exist."""
        split = self._split(split)
        folder = self._folder(split)
        list_file = find_list(self.root, LIST_FILES[split], LIST_DIRS)
        if list_file is not None:
            names = [n.removesuffix(".npz").removesuffix(".npy.h5") for n in read_list(list_file)]
            check_names_exist(names, lambda n: self.path(split, n), str(list_file))
            return names
        pattern = "*.npz" if split == "train" else "*.h5"
        names = sorted(p.name.removesuffix(".npz").removesuffix(".h5").removesuffix(".npy")
                       for p in folder.glob(pattern) if not p.name.startswith("."))
        if not names:
            raise DataError(f"{folder}: no {pattern} files and no {LIST_FILES[split]}; the {split} split is empty")
        return names

    @staticmethod
    def case_of(name: str) -> str:
        return name.split("_slice")[0]

    def cases(self, split: str = "train") -> list[str]:
        return sorted({self.case_of(n) for n in self.names(split)})

    def read(self, split: str, name: str) -> tuple[np.ndarray, np.ndarray, dict[str, object]]:
        """Raw image and label arrays of one item, and the file's attributes (h5 only)."""
        path = self.path(split, name)
        if self._split(split) == "train":
            arrays, attrs = read_npz(path, ("image", "label")), {}
        else:
            arrays, attrs = read_h5(path, ("image", "label"))
        return arrays["image"], arrays["label"], attrs

    # ------------------------------------------------------------------ datasets

    def slices(self, split: str = "train", *, cases: Sequence[str] | None = None,
               exclude_cases: Sequence[str] | None = None, size: int = 224) -> SliceDataset:
        """The 2-D training slices of ``split`` (only ``train`` holds slices)."""
        if self._split(split) != "train":
            raise DataError(f"{self.root}: the Synapse {split} split holds volumes; "
                            "train on 'train' and evaluate with volumes('test')")
        names = select_cases(self.names("train"), self.case_of, cases, exclude_cases, str(self.root))
        return FileSlices(self, "train", names, size)

    def volumes(self, split: str = "test", *, cases: Sequence[str] | None = None,
                exclude_cases: Sequence[str] | None = None) -> Iterator[Volume]:
        """3-D volumes: the h5 files of ``test``, or ``train`` slices stacked per case."""
        split = self._split(split)
        names = select_cases(self.names(split), self.case_of, cases, exclude_cases, str(self.root))
        if split == "test":
            for name in names:
                yield volume_from_file(self, "test", name, name)
        else:
            yield from stacked_volumes(self, "train", names, self.case_of)

    def _split(self, split: str) -> str:
        split = {"test_vol": "test"}.get(split, split)
        if split not in self.splits:
            raise DataError(f"{self.root}: Synapse has the splits {self.splits}, not {split!r}")
        return split

    def _folder(self, split: str) -> Path:
        folder = self.train_dir if split == "train" else self.test_dir
        if folder is None:
            wanted = TRAIN_DIRS if split == "train" else TEST_DIRS
            raise DataError(f"{self.root}: no {' or '.join(wanted)} folder for the {split} split")
        return folder

