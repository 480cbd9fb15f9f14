"""Names and display colours of the foreground classes of the two benchmark datasets.

Class ``i`` (1-based; 0 is the background) is entry ``i - 1``. Names are those of the paper's tables; the
colours are the official code's.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class LabelSet:
    names: tuple[str, ...]
    colors: tuple[RGB, ...]

    @property
    def num_classes(self) -> int:
        """Including the background."""
        return len(self.names) + 1


SYNAPSE = LabelSet(
    names=("Aorta", "Gallbladder", "Kidney(L)", "Kidney(R)", "Liver", "Pancreas", "Spleen", "Stomach"),
    colors=(
        (30, 144, 255),
        (0, 255, 0),
        (255, 0, 0),
        (0, 255, 255),
        (255, 0, 255),
        (255, 255, 0),
        (128, 0, 255),
        (255, 128, 0),
    ),
)

ACDC = LabelSet(names=("RV", "Myo", "LV"), colors=((30, 144, 255), (0, 255, 0), (255, 0, 0)))


def default_colors(n: int) -> tuple[RGB, ...]:
    """n distinct saturated colours (evenly spaced hues) for datasets without a palette."""
    return tuple(
        tuple(round(255 * v) for v in colorsys.hsv_to_rgb(i / max(n, 1), 1.0, 1.0))  # type: ignore[misc]
        for i in range(n)
    )


def colors_for(names: tuple[str, ...] | list[str]) -> tuple[RGB, ...]:
    """The colours of the label set with these foreground names (``SYNAPSE``, ``ACDC``), else ``default_colors``."""
    for known in (SYNAPSE, ACDC):
        if tuple(names) == known.names:
            return known.colors
    return default_colors(len(names))
