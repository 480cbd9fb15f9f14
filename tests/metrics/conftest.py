"""Random masks and label volumes for the metric tests."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter


class Masks:
    """Random inputs, reproducible per test (seeded from the test's id)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def blobs(self, shape: tuple[int, ...], fraction: float = 0.3, sigma: float = 2.0) -> np.ndarray:
        """A bool mask of smooth random blobs covering about ``fraction`` of the array."""
        field = gaussian_filter(self.rng.standard_normal(shape), sigma)
        return field > np.quantile(field, 1 - fraction)

    def labels(self, shape: tuple[int, ...], num_classes: int, absent: tuple[int, ...] = ()) -> np.ndarray:
        """Integer labels 0 .. num_classes-1 made of random blobs; classes in ``absent`` never appear."""
        labels = np.zeros(shape, dtype=np.int64)
        for c in range(1, num_classes):
            if c not in absent:
                labels[self.blobs(shape, fraction=0.08, sigma=1.5)] = c
        return labels


@pytest.fixture
def masks(request) -> Masks:
    return Masks(zlib.crc32(request.node.nodeid.encode()))
