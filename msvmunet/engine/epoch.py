"""One training epoch that never waits for the GPU: batches in, steps queued, numbers read late.

Nothing in the loop reads a device value back per step. The loss is summed on the device and the
first non-finite loss is remembered there (:class:`LossWatch`); every ``check_every`` steps its
values are copied to pinned host memory without blocking and looked at once the copy has landed.
Phase times come from CUDA events read at the end of the epoch (:class:`PhaseClock`); on the CPU,
where every operation is synchronous, from the wall clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from ..errors import MsvmUnetError

PHASES = ("data", "augment", "step")


class TrainingError(MsvmUnetError):
    """Training stopped for a reason the user can act on (NaN loss, out of memory)."""


class PhaseClock:
    """Where an epoch's time goes, per phase, without a host sync per step.

    ``data``: host seconds spent waiting for the loader; ``augment``: device seconds from the start
    of a step to the network input (host-to-device copy, augmentation, normalisation); ``step``:
    device seconds of the training step (forward, loss, backward, optimiser).
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.data = 0.0
        self.marks: list[tuple[Any, Any, Any]] = []

    def mark(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self) -> dict[str, float]:
        """Phase totals of the epoch (synchronises once, on the last mark)."""
        out = {"data": self.data, "augment": 0.0, "step": 0.0}
        if self.cuda and self.marks:
            self.marks[-1][-1].synchronize()
        for start, mid, end in self.marks:
            if self.cuda:
                out["augment"] += start.elapsed_time(mid) / 1e3
                out["step"] += mid.elapsed_time(end) / 1e3
            else:
                out["augment"] += mid - start
                out["step"] += end - mid
        return out


class LossWatch:
    """The epoch's loss sum and its first non-finite loss, kept on the device, read without stalling."""

    def __init__(self, device: torch.device, check_every: int = 25) -> None:
        self.device = device
        self.check_every = max(1, check_every)
        # [sum of losses, steps, first bad step (-1: none), the bad loss]
        self.state = torch.tensor([0.0, 0.0, -1.0, 0.0], dtype=torch.float64, device=device)
        cuda = device.type == "cuda"
        self.host = torch.zeros(4, dtype=torch.float64, pin_memory=cuda)
        self.pending: torch.cuda.Event | None = None
        self.seen = [0.0, 0.0, -1.0, 0.0]  # the last values read back
        self.fresh = False             # whether ``seen`` changed since the last ``poll``

    def add(self, loss: Tensor, step: int) -> None:
        loss = loss.detach().double()
        bad = ~torch.isfinite(loss) & (self.state[2] < 0)
        self.state[0] += loss
        self.state[1] += 1
        self.state[2] = torch.where(bad, float(step), self.state[2])
        self.state[3] = torch.where(bad, loss, self.state[3])
        if (step + 1) % self.check_every == 0:
            self._request()

    def _request(self) -> None:
        if self.pending is not None:  # the previous copy has not been looked at yet
            return
        self.host.copy_(self.state, non_blocking=True)
        if self.device.type == "cuda":
            self.pending = torch.cuda.Event()
            self.pending.record()
        else:
            self.seen, self.fresh = self.host.tolist(), True

    def poll(self) -> tuple[list[float], bool]:
        """The latest values that have reached the host (never waits), and whether they are new."""
        if self.pending is not None and self.pending.query():
            self.seen, self.pending, self.fresh = self.host.tolist(), None, True
        fresh, self.fresh = self.fresh, False
        return self.seen, fresh

    def final(self) -> list[float]:
        """The epoch's values (waits for the device once)."""
        self.pending = None
        self.seen = self.state.tolist()
        return self.seen


def check_finite(values: list[float], epoch: int, last_good: str) -> None:
    """Raise :class:`TrainingError` when ``LossWatch`` values hold a non-finite loss."""
    if values[2] >= 0:
        raise TrainingError(
            f"the loss became {values[3]} at epoch {epoch + 1}, step {int(values[2]) + 1}; training "
            f"stopped. The last good checkpoint is {last_good}. Try a lower --lr, or --precision fp32."
        )


@dataclass
class EpochResult:
    loss: float
    steps: int
    phases: dict[str, float] = field(default_factory=dict)


def run_epoch(batches: Iterable[dict[str, Tensor]], steps: int, *, prepare: Callable[[dict, int], tuple[Tensor, Tensor]],
              step: Callable[[Tensor, Tensor], Tensor], device: torch.device, epoch: int, last_good: str,
              progress: Callable[[float], None] | None = None, check_every: int = 25) -> EpochResult:
    """Train on at most ``steps`` batches.

    prepare(batch, step) -> (network input, labels) on the device; step(images, labels) -> loss
    (a device scalar; it may be overwritten by the next step, so it is consumed at once);
    progress(mean loss so far) is called when a loss value reaches the host.
    """
    clock = PhaseClock(device)
    watch = LossWatch(device, check_every)
    iterator = iter(batches)
    done = 0
    for i in range(steps):
        t = time.perf_counter()
        batch = next(iterator, None)
        clock.data += time.perf_counter() - t
        if batch is None:
            break
        start = clock.mark()
        images, labels = prepare(batch, i)
        mid = clock.mark()
        loss = step(images, labels)
        watch.add(loss, i)
        clock.marks.append((start, mid, clock.mark()))
        done += 1
        seen, fresh = watch.poll()
        if fresh:
            check_finite(seen, epoch, last_good)
            if progress is not None and seen[1] > 0:
                progress(seen[0] / seen[1])
    values = watch.final()
    check_finite(values, epoch, last_good)
    return EpochResult(loss=values[0] / max(values[1], 1.0), steps=done, phases=clock.seconds())
