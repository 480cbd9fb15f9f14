"""Validation of a whole dataset folder before training: every file, every problem, class histograms."""

from __future__ import annotations

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
    no case, each file reads, image and label shapes match, images are finite, labels are whole
    numbers in 0..C-1 (image folders: every image has a mask, every mask value a class).
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
        stats = SplitReport(items=len(names), cases=len({data.case_of(n) for n in names}),
                            histogram=np.zeros(data.num_classes, dtype=np.int64))
        iterator = names
        if progress:
            from tqdm import tqdm

            iterator = tqdm(names, desc=f"{data.kind} {split}", unit="file")
        for name in iterator:
            where = str(data.path(split, name))
            try:
                image, label, _ = data.read(split, name)
                check_same_shape(image[0] if image.ndim == label.ndim + 1 else image, label, where)  # (C, ...)
                check_image(image, where)
                label = check_label(label, data.num_classes, where)
            except DataError as err:
                report.problems.append(str(err))
                continue
            stats.valid += 1
            stats.shapes.add(tuple(image.shape))
            stats.histogram += np.bincount(label.ravel(), minlength=data.num_classes)[: data.num_classes]
        report.splits[split] = stats
    return report
