"""Preparation of Synapse and ACDC from the raw NIfTI scans into the layouts the readers take.

Both are idempotent: a case whose outputs all exist is skipped (``overwrite=True`` redoes it),
and every file is written atomically, so an interrupted run loses nothing finished. Synapse keeps
a manifest (``prepare_manifest.json``: per case the raw files' sizes and times and the settings),
so that only what a prepare of the same inputs wrote is skipped; other files of the same case
names are refused. A full disk is one line naming the folder and the space needed. Both go
through :class:`~msvmunet.data.preprocessing.Preprocessing`, the code path ``predict`` uses.
"""

from __future__ import annotations

import json
import re
import random
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np

from ..errors import DataError
from .io import (check_image, nifti_shape, read_nifti, reporting_disk_full, write_h5, write_npz,
                 write_text)
from .preprocessing import Preprocessing, acdc_preprocessing, synapse_preprocessing

# BTCV label -> Synapse (released TransUNet data) class: aorta, gallbladder, left kidney,
# right kidney, liver, pancreas, spleen, stomach; the other five BTCV organs -> background.
BTCV_TO_SYNAPSE = {8: 1, 4: 2, 3: 3, 2: 4, 6: 5, 11: 6, 1: 7, 7: 8}
BTCV_CASES = tuple(range(1, 11)) + tuple(range(21, 41))
SYNAPSE_TEST_CASES = (1, 2, 3, 4, 8, 22, 25, 29, 32, 35, 36, 38)


@dataclass
class PrepareSummary:
    """What a preparation run did."""

    out: Path
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    splits: dict[str, list[str]] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)
    class_voxels: dict[str, int] = field(default_factory=dict)

    def format(self) -> str:
        lines = [f"output: {self.out}",
                 f"cases written: {len(self.written)}, skipped (already done): {len(self.skipped)}"]
        for split, cases in self.splits.items():
            lines.append(f"{split}: {len(cases)} cases, {self.items.get(split, 0)} files")
        if self.missing:
            lines.append(f"missing cases: {', '.join(self.missing)}")
        if self.class_voxels:
            total = max(sum(self.class_voxels.values()), 1)
            hist = ", ".join(f"{k} {100 * v / total:.2f}%" for k, v in self.class_voxels.items())
            lines.append(f"voxels of the written cases: {hist}")
        return "\n".join(lines)

    def count(self, label: np.ndarray, class_names: Sequence[str]) -> None:
        self.add_counts(np.bincount(label.ravel(), minlength=len(class_names)), class_names)

    def add_counts(self, counts: np.ndarray, class_names: Sequence[str]) -> None:
        for name, n in zip(class_names, counts):
            self.class_voxels[name] = self.class_voxels.get(name, 0) + int(n)


def _progress(items: Sequence, desc: str, enabled: bool) -> Iterable:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="case")


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar of ``total`` cases, silent unless ``enabled``; a context manager with ``update(n)``."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="case", disable=not enabled)


# ----------------------------------------------------------------------------- Synapse


def read_case(image_path: Path, label_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A raw case's image and label NIfTI files, checked (same shape, finite image): (image, label, affine)."""
    volume, affine = read_nifti(image_path)
    label, _ = read_nifti(label_path)
    if volume.shape != label.shape:
        raise DataError(f"{image_path}: image shape {volume.shape} and label shape {label.shape} differ")
    check_image(volume, str(image_path))
    return volume, label, affine


def remap_btcv(label: np.ndarray, where: str) -> np.ndarray:
    """BTCV labels 0..13 -> the 9 Synapse classes (uint8)."""
    label = np.asarray(label)
    if label.size and (label.min() < 0 or label.max() > 13 or (label != np.round(label)).any()):
        raise DataError(f"{where}: BTCV labels must be whole numbers 0..13, found {label.min()}..{label.max()}; "
                        "is this a BTCV abdomen label file?")
    table = np.zeros(14, dtype=np.uint8)
    for src, dst in BTCV_TO_SYNAPSE.items():
        table[src] = dst
    return table[label.astype(np.int64)]


def synapse_slice_names(case: str, depth: int) -> list[str]:
    return [f"{case}_slice{k:03d}" for k in range(depth)]


def write_synapse_case(out: Path, case: str, image: np.ndarray, label: np.ndarray, *, test: bool,
                       spacing: Sequence[float] | None) -> None:
    """One (D, H, W) case into ``train_npz`` slices or a ``test_vol_h5`` volume."""
    if test:
        attrs = {"spacing": np.asarray(spacing, dtype=np.float64)} if spacing is not None else {}
        write_h5(out / "test_vol_h5" / f"{case}.npy.h5", {"image": image, "label": label}, attrs)
    else:
        for name, img, lab in zip(synapse_slice_names(case, len(image)), image, label):
            write_npz(out / "train_npz" / f"{name}.npz", image=img, label=lab)


def write_synapse_lists(out: Path, train: dict[str, int], test: Sequence[str]) -> None:
    """``lists/train.txt`` (slice names; ``train`` maps case -> depth) and ``lists/test_vol.txt``."""
    slices = [n for case in sorted(train) for n in synapse_slice_names(case, train[case])]
    write_text(out / "lists" / "train.txt", "".join(f"{n}\n" for n in slices))
    write_text(out / "lists" / "test_vol.txt", "".join(f"{c}\n" for c in sorted(test)))


def _synapse_outputs(out: Path, case: str, depth: int, test: bool) -> list[Path]:
    if test:
        return [out / "test_vol_h5" / f"{case}.npy.h5"]
    return [out / "train_npz" / f"{n}.npz" for n in synapse_slice_names(case, depth)]


class _Manifest:
    """``OUT/prepare_manifest.json``: what earlier prepares wrote into OUT, per case the raw files'
    names, sizes and modification times, the settings, and whether all its files were written."""

    NAME = "prepare_manifest.json"

    def __init__(self, out: Path, dataset: str) -> None:
        self.path, self.dataset = out / self.NAME, dataset
        self.cases: dict[str, dict] = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
                self.cases = dict(data["cases"]) if data.get("dataset") == dataset else {}
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise DataError(f"{self.path}: unreadable manifest ({err}); delete it and prepare with "
                                "--overwrite") from err

    @staticmethod
    def record(sources: Sequence[Path], settings: dict) -> dict:
        """What a case's files are made from, as JSON reads it back."""
        stats = {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in sources}
        return json.loads(json.dumps({"sources": stats, "settings": settings}))

    def state(self, case: str, record: dict) -> str:
        """``done`` (written from ``record``), ``started`` (from ``record``, unfinished), or why not."""
        entry = self.cases.get(case)
        if entry is None:
            return f"{self.NAME} has no entry for it"
        if entry.get("sources") != record["sources"]:
            return f"its raw files differ from {sorted(record['sources'])} (size or time)"
        if entry.get("settings") != record["settings"]:
            return "it was prepared with other settings"
        return "done" if entry.get("complete") else "started"

    def mark(self, case: str, record: dict, complete: bool) -> None:
        self.cases[case] = {**record, "complete": complete}
        lines = ",\n".join(f"  {json.dumps(c)}: {json.dumps(e)}" for c, e in sorted(self.cases.items()))
        write_text(self.path, f'{{"dataset": {json.dumps(self.dataset)}, "cases": {{\n{lines}\n}}}}\n')


def _remove_temporaries(folders: Iterable[Path]) -> None:
    """Delete what killed atomic writes left behind (``.tmp-*`` files)."""
    for folder in folders:
        for tmp in folder.glob(".tmp-*"):
            tmp.unlink(missing_ok=True)


def prepare_synapse(raw: str | Path, out: str | Path, *, overwrite: bool = False, progress: bool = True,
                    preprocessing: Preprocessing | None = None,
                    test_cases: Sequence[int] = SYNAPSE_TEST_CASES) -> PrepareSummary:
    """BTCV ``RawData/Training`` (``img/img00XX.nii.gz``, ``label/label00XX.nii.gz``) -> Synapse layout.

    HU clipped to [-125, 275] and scaled by (x + 125) / 400; arrays (slice, row, column) = nibabel's
    transposed (2, 1, 0); labels remapped to the 8 organs; TransUNet's 18/12 train/test split; h5
    volumes keep their spacing (z, y, x) as the attribute ``spacing``. A case is skipped when the
    manifest says it was written from the same raw files and settings; files of a case that this
    prepare did not write are refused (``overwrite=True`` replaces them).
    """
    raw, out = Path(raw), Path(out)
    prep = preprocessing or synapse_preprocessing()
    images = {int(m.group(1)): p for p in sorted((raw / "img").glob("img*.nii*"))
              if (m := re.match(r"img0*(\d+)\.nii(\.gz)?$", p.name))}
    labels = {int(m.group(1)): p for p in sorted((raw / "label").glob("label*.nii*"))
              if (m := re.match(r"label0*(\d+)\.nii(\.gz)?$", p.name))}
    found = sorted(set(images) & set(labels))
    if not found:
        raise DataError(f"{raw}: no img/imgXXXX.nii.gz with a label/labelXXXX.nii.gz; give the BTCV "
                        "'RawData/Training' folder as --raw")
    summary = PrepareSummary(out=out)
    summary.missing = [f"case{i:04d}" for i in sorted(set(BTCV_CASES) | set(images) | set(labels))
                       if i not in found]
    if summary.missing:
        warnings.warn(f"{raw}: {len(summary.missing)} of the BTCV cases are missing or lack an image/label "
                      f"pair: {', '.join(summary.missing)}; preparing the {len(found)} found", stacklevel=2)
    manifest = _Manifest(out, "synapse")
    plan = _plan_synapse(out, manifest, found, images, labels, prep, test_cases, overwrite)
    train = {job.case: job.depth for job in plan if not job.test}
    test = [job.case for job in plan if job.test]
    todo = [job for job in plan if job.record is not None]
    summary.skipped = [job.case for job in plan if job.record is None]
    _remove_temporaries([out, out / "train_npz", out / "test_vol_h5", out / "lists"])
    # bytes still needed: float32 image + uint8 label per voxel (h5 compression aside)
    with reporting_disk_full(out, lambda: 5 * sum(job.voxels for job in todo if job.case not in summary.written)):
        for job in _progress(todo, "synapse", progress):
            manifest.mark(job.case, job.record, complete=False)
            image_path, label_path = images[job.index], labels[job.index]
            volume, label, affine = read_case(image_path, label_path)
            image = prep.apply(volume, affine)
            target = prep.apply_label(remap_btcv(label, str(label_path)), affine)
            for stale in set(_synapse_files(out, job.case)) - set(_synapse_outputs(out, job.case, job.depth, job.test)):
                stale.unlink()
            write_synapse_case(out, job.case, image, target, test=job.test, spacing=prep.spacing(affine))
            manifest.mark(job.case, job.record, complete=True)
            summary.written.append(job.case)
            summary.count(target, prep.class_names)
        write_synapse_lists(out, train, test)
    summary.splits = {"train": sorted(train), "test": sorted(test)}
    summary.items = {"train": sum(train.values()), "test": len(test)}
    return summary


def _synapse_files(out: Path, case: str) -> list[Path]:
    """The files of ``case`` in OUT, whoever wrote them."""
    return [*(out / "train_npz").glob(f"{case}_slice*.npz"), *(out / "test_vol_h5").glob(f"{case}.npy.h5")]


class _SynapseJob(NamedTuple):
    case: str
    index: int                  # the BTCV number
    depth: int
    voxels: int
    test: bool
    record: dict | None         # what the manifest gets; None: already done, skipped


def _plan_synapse(out: Path, manifest: _Manifest, found: Sequence[int], images: dict[int, Path],
                  labels: dict[int, Path], prep: Preprocessing, test_cases: Sequence[int],
                  overwrite: bool) -> list[_SynapseJob]:
    """One job per found case; refuses, before anything is written, cases whose files in OUT
    another dataset or other raw files made."""
    settings = {k: v for k, v in prep.to_dict().items() if k not in ("size", "mean", "std")}
    plan, foreign = [], []
    for index in found:
        case, is_test = f"case{index:04d}", index in test_cases
        shape = nifti_shape(images[index])
        record = _Manifest.record([images[index], labels[index]], {**settings, "test": is_test})
        state = manifest.state(case, record)
        done = state == "done" and all(p.is_file() for p in _synapse_outputs(out, case, shape[prep.axis], is_test))
        if not overwrite and state not in ("done", "started") and _synapse_files(out, case):
            foreign.append(f"{case} ({state})")
        plan.append(_SynapseJob(case, index, shape[prep.axis], int(np.prod(shape)), is_test,
                                None if done and not overwrite else record))
    if foreign:
        raise DataError(f"{out}: holds files of {len(foreign)} case(s) that a prepare of these raw files did "
                        f"not write, e.g. {', '.join(foreign[:3])}; add --overwrite to replace them, or "
                        "choose another output folder")
    return plan


# ----------------------------------------------------------------------------- ACDC


def _read_info(path: Path) -> dict[str, str]:
    info: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if ":" in line:
                key, value = line.split(":", 1)
                info[key.strip()] = value.strip()
    return info


def find_acdc_patients(raw: Path) -> dict[int, dict[str, object]]:
    """patient number -> {"dir", "group", "frames": {"ED": (image, gt), "ES": (image, gt)}}."""
    patients: dict[int, dict[str, object]] = {}
    for folder in sorted(p for p in [raw, *raw.glob("*"), *raw.glob("*/*")] if p.is_dir()):
        match = re.fullmatch(r"patient(\d+)", folder.name)
        if not match or int(match.group(1)) in patients:
            continue
        gts = sorted(folder.glob(f"{folder.name}_frame*_gt.nii*"))
        frames = [(int(re.search(r"_frame(\d+)_gt", g.name).group(1)), g) for g in gts]
        if not frames:
            continue
        info = _read_info(folder / "Info.cfg")
        phases: dict[str, tuple[Path, Path]] = {}
        for number, gt in frames:
            image = gt.with_name(gt.name.replace("_gt", ""))
            if not image.is_file():
                raise DataError(f"{gt}: no image {image.name} beside it; restore the ACDC patient folder")
            if info.get("ED", "").isdigit() or info.get("ES", "").isdigit():
                phase = "ED" if info.get("ED") == str(number) else "ES" if info.get("ES") == str(number) else None
            else:  # no Info.cfg: the earlier frame is end-diastole
                phase = ("ED", "ES")[min(len(phases), 1)]
            if phase and phase not in phases:
                phases[phase] = (image, gt)
        patients[int(match.group(1))] = {"dir": folder, "group": info.get("Group", ""), "frames": phases}
    return patients


def split_patients(patients: dict[int, dict[str, object]], seed: int = 0,
                   fractions: tuple[float, float] = (0.7, 0.1)) -> dict[str, list[int]]:
    """Deterministic 70/10/20 train/valid/test split, stratified by the Info.cfg pathology group."""
    groups: dict[str, list[int]] = defaultdict(list)
    for number, info in sorted(patients.items()):
        groups[str(info["group"])].append(number)
    split: dict[str, list[int]] = {"train": [], "valid": [], "test": []}
    rng = random.Random(seed)
    for group in sorted(groups):
        members = groups[group]
        rng.shuffle(members)
        n_train = int(round(fractions[0] * len(members)))
        n_valid = int(round(fractions[1] * len(members)))
        split["train"] += members[:n_train]
        split["valid"] += members[n_train:n_train + n_valid]
        split["test"] += members[n_train + n_valid:]
    return {k: sorted(v) for k, v in split.items()}


def acdc_slice_names(case: str, phase: str, depth: int) -> list[str]:
    return [f"{case}_{phase}_slice_{k:02d}" for k in range(depth)]


def prepare_acdc(raw: str | Path, out: str | Path, *, seed: int = 0, overwrite: bool = False,
                 progress: bool = True, preprocessing: Preprocessing | None = None) -> PrepareSummary:
    """ACDC ``patientXXX/patientXXX_frameYY[_gt].nii.gz`` -> MT-UNet-style train/valid/test layout.

    Intensities: per volume, clipped to its 0.5/99.5 percentiles and scaled to [0, 1]. Patients are
    split 70/10/20 (stratified by pathology group, ``seed``); train/valid hold 2-D slices
    ``case_XXX_{ED,ES}_slice_YY.npz``, test holds ``case_XXX_volume_{ED,ES}.npz`` with ``spacing``.
    """
    raw, out = Path(raw), Path(out)
    prep = preprocessing or acdc_preprocessing()
    patients = find_acdc_patients(raw)
    if not patients:
        raise DataError(f"{raw}: no patientXXX folders with patientXXX_frameYY_gt.nii.gz; give the ACDC "
                        "'training' folder (or its parent) as --raw")
    split = split_patients(patients, seed)
    summary = PrepareSummary(out=out)
    lists: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for name, numbers in split.items():
        summary.splits[name] = [f"case_{n:03d}" for n in numbers]
    order = [(name, n) for name, numbers in split.items() for n in numbers]
    for split_name, number in _progress(order, "acdc", progress):
        case = f"case_{number:03d}"
        done = True
        for phase, (image_path, gt_path) in sorted(patients[number]["frames"].items()):
            depth = nifti_shape(image_path)[prep.axis]
            if split_name == "test":
                names = [f"{case}_volume_{phase}"]
            else:
                names = acdc_slice_names(case, phase, depth)
            lists[split_name] += names
            if not overwrite and all((out / split_name / f"{n}.npz").is_file() for n in names):
                continue
            done = False
            volume, label, affine = read_case(image_path, gt_path)
            image = prep.apply(volume, affine)
            target = prep.apply_label(label, affine)
            if target.size and (target.min() < 0 or target.max() >= prep.num_classes):
                raise DataError(f"{gt_path}: labels {target.min()}..{target.max()} outside 0..3")
            target = target.astype(np.uint8)
            if split_name == "test":
                write_npz(out / "test" / f"{names[0]}.npz", img=image, label=target,
                          spacing=np.asarray(prep.spacing(affine)))
            else:
                for n, img, lab in zip(names, image, target):
                    write_npz(out / split_name / f"{n}.npz", img=img, label=lab)
            summary.count(target, prep.class_names)
        (summary.skipped if done else summary.written).append(case)
    for split_name, names in lists.items():
        if names:  # an empty split (few patients) gets no folder and no list
            write_text(out / "lists" / f"{split_name}.txt", "".join(f"{n}\n" for n in names))
        summary.items[split_name] = len(names)
    return summary
