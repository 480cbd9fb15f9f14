"""Validation of a whole dataset folder before training: every file, every problem, class histograms."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from .datasets import open_dataset
from .base import read_checked


@dataclass
class SplitReport:
    items: int = 0
    valid: int = 0
    shapes: set[tuple[int, ...]] = field(default_factory=set)
    histogram: np.ndarray | None = None


@dataclass
class CheckReport:
    """The outcome of :func:`check_dataset`; ``ok`` is False when any problem was found."""

    root: Path
    kind: str
    class_names: tuple[str, ...]
    splits: dict[str, SplitReport] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self, max_problems: int = 20) -> str:
        lines = [f"{self.root}: {self.kind} dataset, {len(self.class_names)} classes ({', '.join(self.class_names)})"]
        for name, split in self.splits.items():
            shapes = sorted(split.shapes)
            shown = ", ".join("x".join(map(str, s)) for s in shapes[:4]) + (" ..." if len(shapes) > 4 else "")
            lines.append(f"  {name}: {split.valid}/{split.items} readable and valid; shapes {shown or '-'}")
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

    Checks: the layout is recognised, list files name existing files and are not empty, each file
    reads, holds a slice or a volume as its split should (as training and evaluation read it), image
    and label shapes match, images are finite, labels are whole numbers in 0..C-1. Files are read
    once each, several at a time.
    """
    data = open_dataset(root, kind)
    report = CheckReport(root=Path(root), kind=data.kind, class_names=tuple(data.class_names))
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


def _check_split(data, split: str, names: list[str], problems: list[str], progress: bool) -> SplitReport:
    """Check each file of ``split`` (a thread pool reads several at once); problems are appended in file order."""
    stats = SplitReport(items=len(names), histogram=np.zeros(data.num_classes, dtype=np.int64))
    ndim = 3 if data.kind == "nifti" or split == "test" else 2  # slices for training, volumes for evaluation
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
    """(problem or None, shape, class histogram) of one file, read once."""
    try:
        image, label, _ = read_checked(data, split, name, ndim)
    except DataError as err:
        return str(err), None, None
    return None, tuple(image.shape), np.bincount(label.ravel(), minlength=data.num_classes)[: data.num_classes]
