"""The run folder of a training run: one owner at a time, never replaced or resumed by mistake.

- A folder that holds a run (``config.yaml``, ``last.pt`` or ``final.pt``) is continued with ``resume``
  or replaced with ``force``; anything else is refused. A replaced run's files are removed only once
  the new run has been set up, and ``config.yaml`` is written only then.
- ``train.lock`` names the owner (pid, host); a second run on the folder is refused, the lock of a
  process that no longer runs on this host is taken over. Under torchrun, rank 0 holds it.
- Temporaries of interrupted atomic writes (``.tmp-XXXXXXXX-last.pt``) are removed at start and end.
- A resumed run keeps every setting that shapes the model, the data or the optimisation so far; the
  others may change and are reported.
- A full disk is one line naming the folder, its free space and the space needed (a checkpoint's size).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._files import is_disk_full
from ..errors import CheckpointError, ConfigError, DiskFullError, MsvmUnetError
from .config import TrainConfig, save_yaml
from .distributed import DistInfo

RUN_MARKERS = ("config.yaml", "last.pt", "final.pt")                   # a folder holding one of these holds a run
RUN_FILES = ("config.yaml", "last.pt", "final.pt", "best.pt", "history.csv", "tensorboard")  # what --force replaces
LOCK_NAME = "train.lock"
_TEMPORARY = re.compile(r"^\.tmp-[0-9a-f]{8}-(?P<name>.+)$")           # _files.atomic_path's naming

# Resuming continues the same optimisation: these settings shape the model, the data it sees or the
# optimiser state restored from the checkpoint (lr, betas, ... live in it), so a change is refused.
FIXED_ON_RESUME = (
    "data", "dataset", "val_cases", "select_on_test", "image_size", "augment", "noise",
    "model", "model_options", "batch_size", "seed", "lr", "betas", "eps", "weight_decay", "min_lr",
    "ce_weight", "dice_weight", "freeze_encoder_epochs",
)
# How long, where, how fast and how often: these may change; each change is reported and config.yaml
# records the new values. (epochs: the cosine schedule then anneals to min_lr at the new last epoch;
# pretrained_encoder: the checkpoint's weights replace the encoder's initial ones.)
MAY_CHANGE_ON_RESUME = (
    "epochs", "val_every", "output", "device", "precision", "num_workers", "scan_backend", "compile",
    "inductor", "cuda_graph", "steps_per_epoch", "eval_batch_size", "pretrained_encoder",
)


class RunFolderError(MsvmUnetError):
    """A run folder that holds another run, or is in use."""


# ---------------------------------------------------------------------------------------- the folder

@dataclass
class RunFolder:
    """The run folder as one training process holds it (see :func:`open_run_folder`)."""

    path: Path
    main: bool
    replaced: list[str] = field(default_factory=list)   # an old run's files, removed by ``start``
    lock: "Lock | None" = None
    checkpoint_bytes: int = 0                            # about the size of one checkpoint

    def start(self, config: TrainConfig, model: torch.nn.Module) -> None:
        """The run is set up: remove a replaced run's files, write ``config.yaml``."""
        self.checkpoint_bytes = 3 * tensor_bytes(model.state_dict())  # weights and AdamW's two moments
        if not self.main:
            return
        for name in self.replaced:
            target = self.path / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
        if self.replaced:
            print(f"removed the replaced run's {', '.join(self.replaced)} from {self.path}")
        save_yaml(config, self.path / "config.yaml")

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, kind, err, tb) -> None:
        self.close()
        # config.yaml, history.csv, TensorBoard, the lock (a DiskFullError already says it in one line)
        if isinstance(err, (OSError, RuntimeError)) and not isinstance(err, DiskFullError):
            full = disk_full_error(err, self.path, self.checkpoint_bytes, "the run's files")
            if full is not None:
                raise full from err

    def close(self) -> None:
        """At the end of the run, also on errors: stale temporaries removed, the lock released."""
        if self.lock is not None:
            remove_temporaries(self.path)
            self.lock.release()
            self.lock = None


def open_run_folder(config: TrainConfig, info: DistInfo, *, resume: str | Path | bool | None,
                    force: bool) -> RunFolder:
    """Take ``config.output`` for a new, resumed (``resume``) or replacing (``force``) run, or refuse.

    Rank 0 locks the folder and removes stale temporaries; every rank checks what it holds."""
    path = Path(config.output)
    if resume and force:
        raise ConfigError(f"--resume continues the run in {path} and --force replaces it: give one of them")
    folder = RunFolder(path, info.is_main)
    if info.is_main:
        folder.lock = Lock.acquire(path)
    try:
        held = [name for name in RUN_MARKERS if (path / name).exists()]
        if resume:
            check_resume(config, resume_checkpoint(path, resume), folder.main)
        elif held and not force:
            raise RunFolderError(f"{path} holds a run ({describe_run(path)}): continue it with --resume, "
                                 "replace it with --force, or choose another --output")
        elif held:
            folder.replaced = [name for name in RUN_FILES if (path / name).exists()]
            if folder.main:
                print(f"--force: replacing the run in {path} ({describe_run(path)}); its files are removed "
                      "once the new run is set up")
        if folder.main:
            remove_temporaries(path)
    except BaseException:
        folder.close()
        raise
    return folder


def describe_run(path: Path) -> str:
    """What a run folder holds, e.g. 'config.yaml, last.pt after epoch 8 of 8, final.pt, history.csv'."""
    parts = []
    for name in RUN_FILES:
        if not (path / name).exists():
            continue
        if name in ("last.pt", "final.pt"):
            state = _train_state(path / name)
            if state is not None:
                name += f" after epoch {state[0]}" + (f" of {state[1]['epochs']}" if "epochs" in state[1] else "")
        parts.append(name)
    return ", ".join(parts)


def _train_state(path: Path) -> tuple[int, dict[str, Any]] | None:
    """(epoch, train_config) of a training checkpoint, read through a memory map; None if unreadable."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(obj["epoch"]), dict(obj.get("train_config") or {})
    except Exception:  # not ours, truncated: the caller says what it can without it
        return None


# ---------------------------------------------------------------------------------------- resuming

def resume_checkpoint(path: Path, resume: str | Path | bool) -> Path:
    """The checkpoint ``resume`` names (True: ``<path>/last.pt``), or one line on what to do instead."""
    checkpoint = path / "last.pt" if resume is True else Path(resume)
    if checkpoint.is_file():
        return checkpoint
    if resume is not True:
        raise CheckpointError(f"checkpoint file not found: {checkpoint}")
    if any((path / name).exists() for name in RUN_MARKERS):
        raise CheckpointError(f"nothing to resume in {path}: the run stopped before its first checkpoint "
                              f"(no last.pt); start it afresh with --force instead of --resume")
    raise CheckpointError(f"nothing to resume: {checkpoint} not found (no run in {path}); "
                          "start a new run without --resume")


def resume_changes(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    """The changed settings that may change ('epochs: 300 -> 400'); refuses a change of the others."""
    new = config.to_dict()
    fixed, changed = [], []
    for key, value in new.items():
        if key not in saved or saved[key] == value:  # older checkpoints lack newer settings
            continue
        if key in MAY_CHANGE_ON_RESUME:
            if value != "auto":  # device, precision, backend: 'auto' lets this machine choose
                changed.append(f"{key}: {_show(saved[key])} -> {_show(value)}")
        else:  # FIXED_ON_RESUME, and any setting not yet sorted into one of the lists
            fixed.append(f"{key}: {_show(saved[key])} in the run, {_show(value)} now")
    if fixed:
        raise ConfigError(f"cannot resume with changed {'; '.join(fixed)} (these change the model, the data or "
                          "the optimisation): resume with the run's values, or start a new run with --force or "
                          "in another --output")
    return changed


def check_resume(config: TrainConfig, checkpoint: Path, report: bool) -> None:
    """Refuse a resume that changes what must stay; report what changes."""
    state = _train_state(checkpoint)
    if state is None:  # unreadable, or not a training checkpoint: the trainer's loader says which
        return
    changed = resume_changes(state[1], config)
    if changed and report:
        print(f"resuming {checkpoint} with changed settings (recorded in config.yaml): {'; '.join(changed)}")


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


# ---------------------------------------------------------------------------------------- the lock

def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux; None elsewhere), to tell a reused pid;
    'ended' for a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return "ended" if fields[0] == "Z" else fields[19]


def _alive(owner: dict[str, Any]) -> bool:
    """Whether a lock's owner may still run (on another host it cannot be told: assumed so)."""
    if owner.get("host") != socket.gethostname():
        return True
    try:
        pid = int(owner["pid"])
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (KeyError, TypeError, ValueError, OverflowError):
        return False
    start = _process_start(pid)
    return start != "ended" and (owner.get("start") is None or start is None or owner["start"] == start)


@dataclass
class Lock:
    """``<folder>/train.lock``, created with O_CREAT | O_EXCL: one owner at a time."""

    path: Path
    token: str
    created: bool  # the folder was made for it: removed again if left empty

    @classmethod
    def acquire(cls, folder: Path) -> "Lock":
        created = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / LOCK_NAME
        me = {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid()),
              "since": time.strftime("%Y-%m-%d %H:%M:%S"), "token": uuid.uuid4().hex}
        for attempt in range(50):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = _read_lock(path)
                if owner is None and attempt < 5:  # being written by its owner this instant, or just removed
                    time.sleep(0.05)
                    continue
                if owner is not None and _alive(owner):
                    raise RunFolderError(
                        f"{folder} is in use by another training run (pid {owner.get('pid')} on "
                        f"{owner.get('host')}, since {owner.get('since')}); wait for it, or choose another "
                        f"--output (if that process is gone, delete {path})") from None
                if _take_over(path, owner):
                    who = "an unreadable lock" if owner is None else \
                        f"the lock of pid {owner.get('pid')} on {owner.get('host')}, which no longer runs"
                    print(f"taking over {path}: {who}")
                continue
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(me, f)
                    f.flush()
                    os.fsync(f.fileno())
            except BaseException:  # e.g. a full disk: no half-written lock left behind
                path.unlink(missing_ok=True)
                raise
            return cls(path, me["token"], created)
        raise RunFolderError(f"could not take {path}: other processes keep creating it; retry")

    def release(self) -> None:
        owner = _read_lock(self.path)
        if owner is not None and owner.get("token") == self.token:
            self.path.unlink(missing_ok=True)
        if self.created and not any(self.path.parent.iterdir()):
            self.path.parent.rmdir()


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _take_over(path: Path, stale: dict[str, Any] | None) -> bool:
    """Remove the stale lock ``stale`` - unless another process replaced it meanwhile (then keep theirs)."""
    moved = path.with_name(f".stale-{uuid.uuid4().hex[:8]}-{LOCK_NAME}")
    try:
        os.rename(path, moved)  # atomic: of several processes taking over, one moves it
    except FileNotFoundError:
        return False
    now = _read_lock(moved)
    if now is not None and now != stale:  # a lock taken meanwhile: put it back
        try:
            os.link(moved, path)
        except FileExistsError:
            pass
        moved.unlink(missing_ok=True)
        return False
    moved.unlink(missing_ok=True)
    return True


# ---------------------------------------------------------------------------------------- temporaries

def remove_temporaries(folder: Path) -> list[str]:
    """Remove the folder's temporaries of interrupted atomic writes of its run files (the lock holder's
    right: no other writer of this folder runs); returns their names."""
    removed = []
    if not folder.is_dir():
        return removed
    for entry in sorted(folder.iterdir()):
        match = _TEMPORARY.match(entry.name)
        if match and match["name"] in RUN_FILES and entry.is_file():
            size = entry.stat().st_size
            entry.unlink(missing_ok=True)
            removed.append(f"{entry.name} ({_mb(size)})")
    if removed:
        print(f"removed {len(removed)} temporary file(s) of an interrupted write from {folder}: {', '.join(removed)}")
    return removed


# ---------------------------------------------------------------------------------------- disk full

def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a nested dict/list: about the size of its checkpoint file."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def _chain(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def disk_full_error(err: BaseException, folder: Path, needed: int, writing: str) -> DiskFullError | None:
    """One line for a write that failed for lack of space (:func:`~msvmunet._files.is_disk_full` anywhere
    in the error's chain) naming the checkpoint's size and the last good checkpoint; None otherwise."""
    folder = Path(folder)
    try:
        free = shutil.disk_usage(folder if folder.exists() else folder.parent).free
    except OSError:
        free = None
    full = any(is_disk_full(e, folder if folder.exists() else None) for e in _chain(err))
    if not full:
        return None
    kept = folder / "last.pt"
    then = (f"the last good checkpoint {kept} is kept: free space (or move the run folder) and continue with "
            "--resume") if kept.is_file() else "free space (or choose another --output) and start again"
    return DiskFullError(f"disk full: {folder} has {_mb(free) if free is not None else 'no'} free, writing "
                         f"{writing} needs about {_mb(needed)}; {then}")


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"
