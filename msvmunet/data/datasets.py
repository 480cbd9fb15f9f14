"""One entry point for every supported dataset folder, and case splits.

    data = open_dataset("data/synapse")          # SynapseData, ACDCData, NiftiData, SSL4MISData, ImageFolderData
    train_cases, val_cases = split_cases(data.cases("train"), 2, seed=0)
    train = data.slices("train", cases=train_cases, size=224)   # torch Dataset of fixed-size slices
    for vol in data.volumes("train", cases=val_cases): ...       # Volume(case, image, label, spacing)
    for vol in data.volumes("test"): ...

Every format object has ``kind``, ``splits``, ``num_classes``, ``class_names``, ``preprocessing``,
``names(split)``, ``cases(split)``, ``read(split, name)``, ``path(split, name)``, ``slices(...)`` and
``volumes(...)``; those whose splits can overlap also have ``split_problems()``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence, Union

from ..errors import DataError
from .acdc import ACDCData, is_acdc
from .image_folders import ImageFolderData, is_image_folders
from .nifti import NiftiData, is_nifti
from .preprocessing import Preprocessing
from .ssl4mis import SSL4MISData, is_ssl4mis
from .synapse import SynapseData, is_synapse

DataSource = Union[SynapseData, ACDCData, NiftiData, SSL4MISData, ImageFolderData]
FORMATS = ("synapse", "acdc", "nifti", "ssl4mis", "images")
ALIASES = {"nnunet": "nifti"}  # the nnU-Net raw layout (dataset.json, imagesTr, labelsTr) is read as nifti


def detect_format(root: str | Path) -> str:
    """One of ``FORMATS``, from the folder's layout."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; give the dataset's root folder")
    if is_synapse(root):
        return "synapse"
    if is_nifti(root):
        return "nifti"
    if is_ssl4mis(root):
        return "ssl4mis"
    if is_image_folders(root):
        return "images"
    if is_acdc(root):
        return "acdc"
    raise DataError(f"{root}: not a recognised dataset: expected train_npz/test_vol_h5 (Synapse), "
                    "train/valid/test (ACDC), dataset.json + imagesTr/labelsTr (nnU-Net) or "
                    "data/ + train_slices.list (SSL4MIS ACDC) or images/ + masks/ (2-D images)")


def open_dataset(root: str | Path, kind: str | None = None,
                 preprocessing: Preprocessing | None = None) -> DataSource:
    """The dataset at ``root``; ``kind`` overrides detection, ``preprocessing`` applies to NIfTI data."""
    kind = ALIASES.get(kind, kind) or detect_format(root)
    if kind == "synapse":
        return SynapseData(root)
    if kind == "acdc":
        return ACDCData(root)
    if kind == "nifti":
        return NiftiData(root, preprocessing)
    if kind == "ssl4mis":
        return SSL4MISData(root)
    if kind == "images":
        return ImageFolderData(root)
    raise DataError(f"unknown dataset kind {kind!r}; use one of {FORMATS}")


def split_cases(cases: Sequence[str], val: int | float | Sequence[str], *,
                seed: int = 0) -> tuple[list[str], list[str]]:
    """Split case names into (train, held-out).

    val: the held-out case names, or their number (int), or their fraction (float in (0, 1)),
    then drawn with ``seed`` (the same seed gives the same split). Both parts keep the input order.
    """
    cases = list(dict.fromkeys(cases))
    if isinstance(val, str):
        val = [v for v in val.split(",") if v]
    if isinstance(val, (int, float)) and not isinstance(val, bool):
        n = int(val) if isinstance(val, int) else int(round(val * len(cases)))
        if not (isinstance(val, int) or 0.0 < val < 1.0) or not 0 <= n < len(cases):
            raise DataError(f"cannot hold out {val!r} of {len(cases)} cases; need 0 <= n < {len(cases)}")
        held = set(random.Random(seed).sample(cases, n))
    else:
        held = set(val)
        unknown = sorted(held - set(cases))
        if unknown:
            raise DataError(f"held-out cases {unknown} are not among the {len(cases)} cases "
                            f"({cases[:10]}{' ...' if len(cases) > 10 else ''})")
        if len(held) == len(cases):
            raise DataError("every case is held out; keep at least one for training")
    return [c for c in cases if c not in held], [c for c in cases if c in held]
