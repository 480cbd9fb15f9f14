"""Training checkpoints: plain dicts (``weights_only=True``), written atomically, resumable."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from .._files import atomic_write
from ..errors import CheckpointError
from ..models.checkpoints import checkpoint_dict, load_file
from ..models.config import ModelConfig
from .distributed import unwrap
from .run_folder import disk_full_error, tensor_bytes


def rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_pos": int(np.random.get_state()[2]),
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: str | Path) -> Path:
    """torch.save to a temporary file in the same folder, fsync, then rename over ``path``."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def _map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(v, fn) for v in obj)
    return obj


def _snapshot(obj: Any) -> tuple[Any, list[tuple[torch.device, torch.cuda.Event]]]:
    """``obj`` with every tensor cloned where it lives, and an event per CUDA device recorded after the clones.

    On a GPU the clones are queued behind the training steps like any kernel: the host does not wait for the
    device, and the copy to CPU memory is left to the writer thread (:func:`_to_cpu`)."""
    devices: set[torch.device] = set()

    def clone(t: torch.Tensor) -> torch.Tensor:
        if t.is_cuda:
            devices.add(t.device)
        return t.detach().clone()

    snapshot = _map_tensors(obj, clone)
    events = []
    for device in devices:
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(device))
        events.append((device, event))
    return snapshot, events


def _to_cpu(snapshot: Any, events: list[tuple[torch.device, torch.cuda.Event]]) -> Any:
    """The snapshot's tensors in CPU memory, copied on a stream of their own once ``events`` have passed
    (the training stream is not held up)."""
    if not events:
        return snapshot
    streams = {}
    for device, event in events:
        streams[device] = torch.cuda.Stream(device)
        streams[device].wait_event(event)

    def copy(t: torch.Tensor) -> torch.Tensor:
        if not t.is_cuda:
            return t
        with torch.cuda.stream(streams[t.device]):
            return t.to("cpu")  # waits for this stream only

    return _map_tensors(snapshot, copy)


class CheckpointWriter:
    """Writes checkpoints from a background thread so that training waits neither for the device nor the disk.

    ``save`` snapshots every tensor where it lives (clones queued on the GPU behind the training steps, so
    later steps cannot change what is written, and the host does not wait for the device) and queues the
    write; a writer thread copies each snapshot to CPU memory on a stream of its own and writes it
    atomically, in the order saved. ``copies`` maps further paths to changed plain values, written from the
    same snapshot (``final.pt`` beside ``last.pt``). ``supersede=True`` (``last.pt`` after each epoch): a
    later save to the same path replaces this one while it waits, so a disk slower than the epochs writes
    the newest state and never holds training back (``last.pt`` is then an epoch or two behind until the
    queue empties; ``close`` writes whatever waits). Snapshots hold copies of the model and optimiser state
    in device memory until they are on the host (at most the one being written and those waiting).

    A failed write is raised by the next ``save``, ``check`` or ``close``: iterate the training batches
    through ``watch`` to have it raised at the next batch. A full disk is a
    :class:`~msvmunet.engine.run_folder.DiskFullError`. A killed process leaves the previous complete file
    in place.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[dict[str, Any]] = []
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, path: str | Path, obj: dict[str, Any], copies: dict[Path, dict[str, Any]] | None = None,
             *, supersede: bool = False) -> None:
        self.check()
        snapshot, events = _snapshot(obj)
        job = dict(path=Path(path), snapshot=snapshot, events=events, copies=dict(copies or {}), supersede=supersede)
        with self._lock:
            self._queue = [j for j in self._queue if not (j["supersede"] and j["path"] == job["path"])]
            self._queue.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="checkpoint-writer", daemon=False)
                self._thread.start()

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._thread = None
                    return
                job = self._queue.pop(0)
            target, state = job["path"], job["snapshot"]
            try:
                state = _to_cpu(job.pop("snapshot"), job["events"])  # the device copy is freed here
                targets = [(target, state)] + [(Path(p), dict(state, **changes)) for p, changes in job["copies"].items()]
                for target, state in targets:
                    atomic_save(state, target)
            except BaseException as err:  # reported by the next check(), save() or close()
                full = disk_full_error(err, target.parent, tensor_bytes(state), target.name)
                if full is not None:
                    full.__cause__ = err
                self._error = self._error or full or err

    def drain(self) -> None:
        """Wait until every queued checkpoint is written (or has failed); raises nothing."""
        while True:
            with self._lock:
                thread = self._thread
            if thread is None:
                return
            thread.join()

    def wait(self) -> None:
        """Wait until every queued checkpoint is written; raise the first failed write."""
        self.drain()
        self.check()

    def check(self) -> None:
        """Raise the error of a finished write, if any (never waits)."""
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def watch(self, batches: Iterable) -> "_Watched":
        """``batches``, checking before each item that no write has failed."""
        return _Watched(batches, self.check)

    close = wait


class _Watched:
    def __init__(self, batches: Iterable, check: Callable[[], None]) -> None:
        self.batches, self._check = batches, check

    def __iter__(self) -> Iterator:
        return self._checked(iter(self.batches))  # the loader's iterator made now: its workers start now

    def _checked(self, batches: Iterator) -> Iterator:
        for batch in batches:
            self._check()
            yield batch

    def __len__(self) -> int:
        return len(self.batches)

    def __getattr__(self, name: str) -> Any:  # the loader's attributes (dataset, sampler, ...)
        return getattr(self.__dict__["batches"], name)


def training_state(*, model, optimizer, scheduler, scaler, epoch: int, train_config: dict,
                   preprocessing: dict | None, classes: list[str], history: list[dict], best: dict | None,
                   **extra: Any) -> dict[str, Any]:
    """Everything needed to resume after ``epoch`` (the number of completed epochs), plus ``extra``
    plain values (e.g. ``selection``: how this checkpoint was chosen). Tensors are references to the live
    state, on its device: hand the dict to :class:`CheckpointWriter`, which snapshots it at once."""
    return checkpoint_dict(
        unwrap(model),
        to_cpu=False,
        epoch=epoch,
        train_config=train_config,
        preprocessing=preprocessing,
        classes=list(classes),
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        scaler=scaler.state_dict() if scaler is not None else None,
        rng=rng_state(),
        history=history,
        best=best,
        **extra,
    )


def load_training_checkpoint(path: str | Path, model_config: ModelConfig) -> dict[str, Any]:
    """Read a checkpoint to resume from; refuse one written for another model configuration."""
    obj = load_file(path)
    if not isinstance(obj, dict) or "optimizer" not in obj or "epoch" not in obj:
        raise CheckpointError(f"{path} is not a training checkpoint of msvmunet (no optimizer/epoch state); "
                              "start a new run or point --resume at a run's last.pt")
    saved = ModelConfig.from_dict(obj["config"])
    if saved != model_config:
        diffs = _diff(saved.to_dict(), model_config.to_dict())
        raise CheckpointError(
            f"cannot resume from {path}: it was trained with another model configuration "
            f"({'; '.join(diffs)}). Resume with the original options, or start a new run in another --output folder."
        )
    return obj


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: checkpoint {va!r}, now {vb!r}")
    return out
