"""One training epoch that never waits for the GPU: batches in, steps queued, numbers read late.

Nothing in the loop reads a device value back per step. The loss is summed on the device and the
first non-finite loss is remembered there (:class:`LossWatch`); every ``check_every`` steps its
values are copied to pinned host memory without blocking and looked at once the copy has landed.
Under DDP the stop is collective: at those same steps, and at the end of the epoch, the processes
agree (an all-reduce queued on the device) on whether any of them saw a non-finite loss, and each
process looks at the values it requested ``check_every`` steps earlier, at the same step as the
others; all stop together instead of one waiting forever in the next gradient all-reduce.
Phase times come from CUDA events read at the end of the epoch (:class:`PhaseClock`); on the CPU,
where every operation is synchronous, from the wall clock.

Batches arrive augmented from the loader's workers (:mod:`msvmunet.data.batches`); on CUDA the
next batch is copied to the device and normalised on a side stream while the current step runs
(:class:`SideStream`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from ..errors import MsvmUnetError

PHASES = ("data", "augment", "copy", "step")


class TrainingError(MsvmUnetError):
    """Training stopped for a reason the user can act on (NaN loss, out of memory)."""


class PhaseClock:
    """Where an epoch's time goes, per phase, without a host sync per step.

    ``data``: host seconds spent waiting for the loader; ``augment``: seconds the loader's workers
    spent augmenting the epoch's batches (summed over the batches; in parallel with the rest);
    ``copy``: device seconds from a batch's arrival to the network input (host-to-device copy,
    normalisation; on CUDA on a side stream, overlapping the step); ``step``: device seconds of the
    training steps (forward, loss, backward, optimiser). On CUDA, marks are events read once, at the
    end of the epoch.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.data = 0.0
        self.augment = 0.0
        self.spans: dict[str, list[tuple[Any, Any]]] = {"copy": [], "step": []}

    def mark(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def add(self, phase: str, start: Any, end: Any) -> None:
        self.spans[phase].append((start, end))

    def seconds(self) -> dict[str, float]:
        """Phase totals of the epoch (synchronises once, on the last mark)."""
        out = {"data": self.data, "augment": self.augment}
        if self.cuda:
            torch.cuda.synchronize()
        for phase, spans in self.spans.items():
            if self.cuda:
                out[phase] = sum(a.elapsed_time(b) for a, b in spans) / 1e3
            else:
                out[phase] = sum(b - a for a, b in spans)
        return out


class SideStream:
    """Batch preparation on a second CUDA stream, one step ahead of the training step (CPU: inline)."""

    def __init__(self, device: torch.device) -> None:
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def submit(self, prepare: Callable[[], tuple[Tensor, Tensor]], clock: "PhaseClock"):
        """Queue ``prepare()`` (timed as the ``copy`` phase); returns what :meth:`take` needs."""
        if self.stream is None:
            start = clock.mark()
            out = prepare()
            clock.add("copy", start, clock.mark())
            return out, None
        with torch.cuda.stream(self.stream):
            start = clock.mark()
            out = prepare()
            end = clock.mark()
        clock.add("copy", start, end)
        return out, end

    def take(self, submitted) -> tuple[Tensor, Tensor]:
        """(images, labels), usable on the current stream."""
        (images, labels), ready = submitted
        if ready is not None:
            current = torch.cuda.current_stream(images.device)
            current.wait_event(ready)
            images.record_stream(current)  # the allocator must not hand this memory back to the side stream early
            labels.record_stream(current)
        return images, labels


class LossWatch:
    """The epoch's loss sum and its first non-finite loss, kept on the device, read without stalling."""

    def __init__(self, device: torch.device, check_every: int = 25,
                 agree: Callable[[Tensor], Tensor] | None = None) -> None:
        self.device = device
        self.check_every = max(1, check_every)
        self.agree = agree  # DDP: in place, the maximum over the processes
        # [sum of losses, steps, first bad step (-1: none), the bad loss, 1 if any process saw one]
        self.state = torch.tensor([0.0, 0.0, -1.0, 0.0, 0.0], dtype=torch.float64, device=device)
        cuda = device.type == "cuda"
        self.host = torch.zeros(5, dtype=torch.float64, pin_memory=cuda)
        self.pending: torch.cuda.Event | None = None
        self.seen = [0.0, 0.0, -1.0, 0.0, 0.0]  # the last values read back
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

    def _share(self) -> None:
        """DDP: every process learns whether any saw a non-finite loss (same steps on all of them)."""
        if self.agree is not None:
            self.state[4:5] = self.agree((self.state[2:3] >= 0).double())

    def _request(self) -> None:
        self._share()
        if self.agree is not None and self.pending is not None:
            # the copy asked for check_every steps ago has long landed: read it now, at the same step on every process
            self.pending.synchronize()
            self.seen, self.pending, self.fresh = self.host.tolist(), None, True
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
        if self.pending is not None and self.agree is None and self.pending.query():
            self.seen, self.pending, self.fresh = self.host.tolist(), None, True
        fresh, self.fresh = self.fresh, False
        return self.seen, fresh

    def final(self) -> list[float]:
        """The epoch's values (waits for the device once)."""
        self._share()
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
    if values[4] > 0:
        raise TrainingError(
            f"the loss became non-finite in another process at epoch {epoch + 1} (by step {int(values[1])}); "
            f"training stopped. The last good checkpoint is {last_good}. Try a lower --lr, or --precision fp32."
        )


@dataclass
class EpochResult:
    loss: float
    steps: int
    phases: dict[str, float] = field(default_factory=dict)


def run_epoch(batches: Iterable[dict[str, Tensor]], steps: int, *, prepare: Callable[[dict, int], tuple[Tensor, Tensor]],
              step: Callable[[Tensor, Tensor], Tensor], device: torch.device, epoch: int, last_good: str,
              progress: Callable[[float], None] | None = None, check_every: int = 25,
              after_last_batch: Callable[[], None] | None = None,
              agree: Callable[[Tensor], Tensor] | None = None) -> EpochResult:
    """Train on at most ``steps`` batches.

    prepare(batch, step) -> (network input, labels) on the device; step(images, labels) -> loss
    (a device scalar; it may be overwritten by the next step, so it is consumed at once);
    progress(mean loss so far) is called when a loss value reaches the host; after_last_batch() once
    the epoch's last batch is in hand (e.g. to start loading the next epoch while the GPU catches up);
    agree(flag) -> flag: under DDP, the in-place maximum over the processes (the NaN stop is collective).
    """
    clock = PhaseClock(device)
    watch = LossWatch(device, check_every, agree)
    side = SideStream(device)
    iterator = iter(batches)

    def fetch(i: int):
        if i >= steps:
            return None
        t = time.perf_counter()
        batch = next(iterator, None)
        clock.data += time.perf_counter() - t
        if isinstance(batch, dict):
            clock.augment += float(batch.get("augment_s", 0.0))
        if after_last_batch is not None and (batch is None or i == steps - 1):
            after_last_batch()
        return None if batch is None else side.submit(lambda: prepare(batch, i), clock)

    ahead = fetch(0)
    done = 0
    while ahead is not None:
        images, labels = side.take(ahead)
        ahead = fetch(done + 1)  # queued before this step, so that it runs beside it
        start = clock.mark()
        loss = step(images, labels)
        watch.add(loss, done)
        clock.add("step", start, clock.mark())
        done += 1
        seen, fresh = watch.poll()
        if fresh:
            check_finite(seen, epoch, last_good)
            if progress is not None and seen[1] > 0:
                progress(seen[0] / seen[1])
    values = watch.final()
    check_finite(values, epoch, last_good)
    return EpochResult(loss=values[0] / max(values[1], 1.0), steps=done, phases=clock.seconds())
