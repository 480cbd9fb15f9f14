"""Training batches made whole where they are loaded: read, resized, stacked and augmented in the
``DataLoader``'s worker processes, so that the training process only copies them to the device.

Each item of :class:`AugmentedBatches` is one batch, named by a key ``(epoch, step, indices)`` that
:class:`BatchKeys` draws from a sampler (a ``DistributedSampler`` under DDP). The augmentation's
generator is seeded from ``(seed, epoch, step, rank)`` alone, so a batch is the same whatever the
number of workers, and a resumed run augments its later epochs as the uninterrupted run would have.

On a GPU this keeps the augmentation's few hundred small operations per batch off the training
process, whose one job is then to keep the GPU fed (see ``BENCHMARKS.md``, training end to end).
"""

from __future__ import annotations

import math
import time
from typing import Iterator

import torch
from torch.utils.data import Dataset, Sampler

from .augment import Augmenter


def batch_generator(seed: int, epoch: int, step: int, rank: int) -> torch.Generator:
    """The CPU generator that augments batch ``step`` of ``epoch`` on process ``rank``."""
    return torch.Generator().manual_seed(hash((seed, epoch, step, rank)) % 2**63)


class BatchKeys(Sampler):
    """``(epoch, step, indices)`` for each batch of ``batch_size`` indices that ``sampler`` yields.

    ``set_epoch`` is passed on to the sampler (a ``DistributedSampler`` reshuffles with it);
    ``drop_last`` drops a last partial batch.
    """

    def __init__(self, sampler: Sampler, batch_size: int, drop_last: bool = False) -> None:
        self.sampler, self.batch_size, self.drop_last = sampler, int(batch_size), bool(drop_last)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[int, int, list[int]]]:
        epoch, indices, step = self.epoch, [], 0
        for index in self.sampler:
            indices.append(int(index))
            if len(indices) == self.batch_size:
                yield epoch, step, indices
                indices, step = [], step + 1
        if indices and not self.drop_last:
            yield epoch, step, indices


class AugmentedBatches(Dataset):
    """``dataset[(epoch, step, indices)]`` -> one batch of ``slices``, augmented when ``augmenter`` is set.

    The batch: ``{"image": (B, C, S, S) float32 in [0, 1] (not normalised), "label": (B, S, S) class
    indices, uint8 when the classes fit in it (an eighth of int64's bytes to pass between processes
    and copy to the device; ``.long()`` them there), "case": [str], "name": [str], "augment_s":
    seconds spent augmenting}``. Use it with
    ``DataLoader(batches, sampler=BatchKeys(...), batch_size=None)``.
    """

    def __init__(self, slices: Dataset, augmenter: Augmenter | None = None, *, seed: int = 0,
                 rank: int = 0) -> None:
        self.slices, self.augmenter, self.seed, self.rank = slices, augmenter, int(seed), int(rank)

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, key: tuple[int, int, list[int]]) -> dict[str, object]:
        epoch, step, indices = key
        items = [self.slices[i] for i in indices]
        images = torch.stack([item["image"] for item in items])
        labels = torch.stack([item["label"] for item in items])
        seconds = 0.0
        if self.augmenter is not None:
            start = time.perf_counter()
            images, labels = self.augmenter(images, labels, generator=batch_generator(self.seed, epoch, step,
                                                                                      self.rank))
            seconds = time.perf_counter() - start
        if self.slices.num_classes <= 256:
            labels = labels.to(torch.uint8)
        return {"image": images, "label": labels, "case": [item["case"] for item in items],
                "name": [item["name"] for item in items], "augment_s": seconds}
