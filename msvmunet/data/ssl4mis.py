"""ACDC cardiac MR in the SSL4MIS layout (used by Mamba-UNet and most semi-supervised work).

::

    ROOT/data/slices/patientNNN_frameMM_slice_K.h5   2-D slices: datasets image (H, W) float in [0, 1],
                                                     label (H, W) uint8 0..3 (or directly in ROOT/data/)
    ROOT/data/patientNNN_frameMM.h5                  volumes: image, label (Z, H, W); no voxel spacing
    ROOT/train_slices.list                           training slice names (else: the slices of train.list)
    ROOT/{train,val,test}.list                       volume names per split (70 / 10 / 20 patients)

Training uses the slices of ``train``; ``val`` and ``test`` are volumes. A slice's volume is its name
without ``_slice_K``, its case the patient (``patient001``): the splits must not share a patient.
The files carry no spacing, so distances are in voxels.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import DataError
from .base import FileSlices, SliceDataset, Volume, select_cases, stacked_volumes, volume_from_file
from .io import read_h5, read_list
from .preprocessing import Preprocessing, acdc_preprocessing
from .synapse import check_names_exist

SPLITS = ("train", "val", "test")
ALIASES = {"valid": "val", "validation": "val"}


def is_ssl4mis(root: Path) -> bool:
    return (root / "data").is_dir() and any((root / f).is_file() for f in ("train_slices.list", "train.list",
                                                                           "val.list", "test.list"))


def volume_of(name: str) -> str:
    """``patient001_frame01_slice_3`` -> ``patient001_frame01``; volume names stay as they are."""
    return re.sub(r"_slice_?\d+$", "", name)


def case_of(name: str) -> str:
    """The patient: ``patient001`` for every slice and volume of patient 1."""
    match = re.match(r"(patient\d+)", name)
    return match.group(1) if match else volume_of(name)


def _names(lines: list[str]) -> list[str]:
    return [Path(n).name.removesuffix(".h5") for n in lines]


class SSL4MISData:
    """An SSL4MIS ACDC folder: ``train`` holds slices, ``val`` and ``test`` volumes."""

    kind = "ssl4mis"
    notes = ("the h5 files carry no voxel spacing: distances (HD95, ASD) are in voxels",)

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not (self.root / "data").is_dir():
            raise DataError(f"{self.root}: no data/ folder; an SSL4MIS ACDC dataset holds data/slices/*.h5, "
                            "data/*.h5 and train_slices.list, val.list, test.list")
        self.preprocessing: Preprocessing = acdc_preprocessing()
        self.num_classes = self.preprocessing.num_classes
        self.class_names = self.preprocessing.class_names
        self.case_of = case_of
        has = {s: (self.root / f"{s}.list").is_file() for s in SPLITS}
        has["train"] = has["train"] or (self.root / "train_slices.list").is_file()
        self.splits = tuple(s for s in SPLITS if has[s])
        if not self.splits:
            raise DataError(f"{self.root}: no train_slices.list, train.list, val.list or test.list")
        slices = self.root / "data" / "slices"
        self.slice_dir = slices if slices.is_dir() else self.root / "data"

    def path(self, split: str, name: str) -> Path:
        folder = self.slice_dir if self._split(split) == "train" else self.root / "data"
        return folder / f"{name}.h5"

    def names(self, split: str) -> list[str]:
        """Slice names (train) or volume names (val, test) from the list files, checked to exist."""
        split = self._split(split)
        list_file, names = self._listed(split)
        if list_file.name == "train.list":  # no train_slices.list: the slice files of the train volumes
            volumes = set(names)
            names = sorted(p.stem for p in self.slice_dir.glob("*_slice_*.h5") if volume_of(p.stem) in volumes)
            if not names:
                raise DataError(f"{self.slice_dir}: no *_slice_*.h5 files of the volumes in {list_file}")
        check_names_exist(names, lambda n: self.path(split, n), str(list_file))
        return names

    def _listed(self, split: str) -> tuple[Path, list[str]]:
        """The list file of a split and the names in it."""
        list_file = self.root / f"{split}.list"
        if split == "train" and (self.root / "train_slices.list").is_file():
            list_file = self.root / "train_slices.list"
        return list_file, _names(read_list(list_file))

    def cases(self, split: str = "train") -> list[str]:
        return sorted({case_of(n) for n in self.names(split)})

    def split_problems(self) -> list[str]:
        """One line per pair of splits that share patients (the splits must be patient-disjoint)."""
        patients = {s: {case_of(n) for n in self._listed(s)[1]} for s in self.splits}
        problems = []
        for i, a in enumerate(self.splits):
            for b in self.splits[i + 1:]:
                shared = sorted(patients[a] & patients[b])
                if shared:
                    problems.append(f"{self.root}: the {a} and {b} lists share {len(shared)} patient(s), e.g. "
                                    f"{shared[:5]}; each patient must be in one split only")
        return problems

    def read(self, split: str, name: str) -> tuple[np.ndarray, np.ndarray, dict[str, object]]:
        """Raw ``image`` and ``label`` of one h5 file, and its attributes."""
        arrays, attrs = read_h5(self.path(split, name), ("image", "label"))
        return arrays["image"], arrays["label"], attrs

    def slices(self, split: str = "train", *, cases: Sequence[str] | None = None,
               exclude_cases: Sequence[str] | None = None, size: int = 224) -> SliceDataset:
        if self._split(split) != "train":
            raise DataError(f"{self.root}: the SSL4MIS {split} split holds volumes; train on 'train', "
                            "select on volumes('val'), evaluate volumes('test')")
        problems = self.split_problems()
        if problems:
            raise DataError(problems[0])
        names = select_cases(self.names("train"), case_of, cases, exclude_cases, str(self.slice_dir))
        return FileSlices(self, "train", names, size)

    def volumes(self, split: str = "test", *, cases: Sequence[str] | None = None,
                exclude_cases: Sequence[str] | None = None) -> Iterator[Volume]:
        """The volume files of ``val`` / ``test``, or the ``train`` slices stacked per volume."""
        split = self._split(split)
        names = select_cases(self.names(split), case_of, cases, exclude_cases, str(self.root / f"{split}.list"))
        if split == "train":
            yield from stacked_volumes(self, "train", names, volume_of)
        else:
            for name in names:
                yield volume_from_file(self, split, name, name)

    def _split(self, split: str) -> str:
        split = ALIASES.get(split, split)
        if split not in self.splits:
            raise DataError(f"{self.root}: this SSL4MIS dataset has the splits {self.splits}, not {split!r}")
        return split

