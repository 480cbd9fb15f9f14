"""Validation of a whole dataset folder before training: every file, every problem, class histograms."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from .datasets import open_dataset
from .io import check_image, check_label, check_same_shape


@dataclass
class SplitReport:
    items: int = 0
    valid: int = 0
    cases: int = 0
    shapes: set[tuple[int, ...]] = field(default_factory=set)
    histogram: np.ndarray | None = None


@dataclass
class CheckReport:
    """The outcome of :func:`check_dataset`; ``ok`` is False when any problem was found."""

    root: Path
    kind: str
    class_names: tuple[str, ...]
    channels: int = 1
    notes: tuple[str, ...] = ()
    splits: dict[str, SplitReport] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self, max_problems: int = 20) -> str:
        lines = [f"{self.root}: {self.kind} dataset, {len(self.class_names)} classes ({', '.join(self.class_names)}), "
                 f"{self.channels} image channel(s)"]
        lines += [f"  note: {n}" for n in self.notes]
        for name, split in self.splits.items():
            shapes = sorted(split.shapes, key=lambda s: (int(np.prod(s)), s))
            shown = ", ".join("x".join(map(str, s)) for s in shapes)
            if len(shapes) > 4:
                shown = f"{len(shapes)} sizes from {'x'.join(map(str, shapes[0]))} to {'x'.join(map(str, shapes[-1]))}"
            lines.append(f"  {name}: {split.valid}/{split.items} readable and valid ({split.cases} cases); "
                         f"shapes {shown or '-'}")
            if split.histogram is not None and split.histogram.sum():
                fractions = split.histogram / split.histogram.sum()
                lines.append("    classes: " + ", ".join(f"{c} {100 * f:.2f}%"
                                                       for c, f in zip(self.class_names, fractions)))
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines += [f"  - {p}" for p in self.problems[:max_problems]]
            if len(self.problems) > max_problems:
                lines.append(f"  ... and {len(self.problems) - max_problems} more")
        else:
            lines.append("no problems found")
        return "\n".join(lines)


def check_dataset(root: str | Path, kind: str | None = None, *, progress: bool = False) -> CheckReport:
    """Read every file of every split of the dataset at ``root`` and collect all problems.

    Checks: the layout is recognised, list files name existing files and are not empty, splits share
    no case, each file reads, holds a slice or a volume as its split should (as training and
    evaluation read it), image and label shapes match, images are finite, labels are whole numbers in
    0..C-1 (image folders: every image has a mask, every mask value a class). Files are read once
    each, several at a time.
    """
    data = open_dataset(root, kind)
    report = CheckReport(root=Path(root), kind=data.kind, class_names=tuple(data.class_names),
                         channels=data.preprocessing.channels, notes=tuple(getattr(data, "notes", ())))
    if hasattr(data, "split_problems"):  # layouts whose splits or pairs can disagree
        try:
            report.problems += data.split_problems()
        except DataError as err:
            report.problems.append(str(err))
    for split in data.splits:
        try:
            names = data.names(split)
        except DataError as err:
            if split == "test" and data.kind == "nifti":
                continue
            report.problems.append(str(err))
            continue
        report.splits[split] = _check_split(data, split, names, report.problems, progress)
    return report


def check_training_data(data, *, test_split: bool = False, progress: bool = False) -> None:
    """Raise one :class:`DataError` naming the unusable files among those a training run reads (every
    file of ``train``, and of ``test`` when the checkpoint is selected on it), before the run starts."""
    problems: list[str] = []
    splits = ("train", "test") if test_split else ("train",)
    for split in splits:
        try:
            names = data.names(split)
        except DataError as err:
            problems.append(str(err))
            continue
        _check_split(data, split, names, problems, progress)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s): 'msvmunet check-data {data.root}' lists them all)" \
            if len(problems) > 1 else ""
        raise DataError(f"the training data cannot be used: {problems[0]}{more}")


def _label_ndim(data, split: str) -> int:
    """2 for a file holding a slice, 3 for a volume, as training and evaluation read ``split``."""
    if data.kind == "nifti":
        return 3
    if data.kind == "images":
        return 2
    return 3 if split in ("test", "val") else 2  # Synapse / ACDC test volumes, SSL4MIS val / test volumes


def _check_split(data, split: str, names: list[str], problems: list[str], progress: bool) -> SplitReport:
    """Check each file of ``split`` (a thread pool reads several at once); problems are appended in file order."""
    stats = SplitReport(items=len(names), cases=len({data.case_of(n) for n in names}),
                        histogram=np.zeros(data.num_classes, dtype=np.int64))
    ndim = _label_ndim(data, split)
    with ThreadPoolExecutor() as pool:
        results = pool.map(lambda name: _check_file(data, split, name, ndim), names)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(names), desc=f"checking {data.kind} {split}", unit="file", leave=False)
        for problem, shape, histogram in results:
            if problem is not None:
                problems.append(problem)
                continue
            stats.valid += 1
            stats.shapes.add(shape)
            stats.histogram += histogram
    return stats


def _check_file(data, split: str, name: str, ndim: int):
    """(problem or None, shape, class histogram) of one file, read once. Images may carry a leading
    channel axis."""
    where = str(data.path(split, name))
    try:
        image, label, _ = data.read(split, name)
        if label.ndim != ndim or image.ndim not in (ndim, ndim + 1):
            kind = "(D, H, W) volume" if ndim == 3 else "(H, W) slice"
            raise DataError(f"{where}: expected a {kind}, got shape {image.shape}")
        check_same_shape(image[0] if image.ndim == ndim + 1 else image, label, where)
        check_image(image, where)
        label = check_label(label, data.num_classes, where)
    except DataError as err:
        return str(err), None, None
    return None, tuple(image.shape), np.bincount(label.ravel(), minlength=data.num_classes)[: data.num_classes]
