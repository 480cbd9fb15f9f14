"""Atomic file writing, for every file the package writes: readers see the old file or the new one,
never a partial one (an interrupted or killed writer leaves the old file in place). A full disk is
reported as a :class:`DiskFullError` naming the folder and the space needed."""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Union

from .errors import DiskFullError

PathLike = Union[str, "os.PathLike[str]"]

# torch.save reports a full disk without errno ("[enforce fail at inline_container.cc:...] unexpected pos",
# "PytorchStreamWriter failed writing file"): then a folder with less free space than this is full
_LOW_SPACE = 16 * 2**20


def is_disk_full(err: BaseException, folder: PathLike | None = None) -> bool:
    """Whether ``err`` is a write that failed for want of space (ENOSPC or EDQUOT), however the writer
    wrapped it: an OSError's errno, h5py's or PyTorch's message."""
    if isinstance(err, DiskFullError):
        return True
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    if "No space left on device" in text or "Disk quota exceeded" in text:
        return True
    if isinstance(err, RuntimeError) and folder is not None and (
            "inline_container" in text or "PytorchStreamWriter" in text):
        try:
            return shutil.disk_usage(folder).free < _LOW_SPACE
        except OSError:
            return False
    return False


def disk_full_error(path: PathLike, needed: int | None = None, exact: bool = False) -> DiskFullError:
    """The one-line error for a file that did not fit: its folder, the space it needs (``exact``, or at
    least ``needed``) and what is free."""
    path = Path(path)
    try:
        free = f", {_size(shutil.disk_usage(path.parent).free)} free"
    except OSError:
        free = ""
    need = f"{'' if exact else 'more than '}{_size(needed)} needed" if needed else "more space needed"
    return DiskFullError(f"{path.parent}: the disk is full; writing {path.name} failed ({need}{free}). "
                         "Free some space or write to another folder; the files written before are complete")


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.0f} KB" if n >= 2**10 else f"{n} bytes"


@contextmanager
def atomic_path(path: PathLike, size: int | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` (same file ending, for writers that look at it), renamed onto
    ``path`` when the block succeeds and removed when it fails. Creates parent folders. A full disk
    raises :class:`DiskFullError` (the partial file removed first) naming ``size``, the bytes to write,
    when the caller knows them."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        if not is_disk_full(err, path.parent):
            raise
        written = tmp.stat().st_size if tmp.exists() else 0
        tmp.unlink(missing_ok=True)
        raise disk_full_error(path, size or written, exact=bool(size)) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path: PathLike, write: Callable[[BinaryIO], object], size: int | None = None) -> Path:
    """Call ``write`` on a binary file object, flushed to disk, then put in place of ``path``
    (``size``: the bytes it writes, when known, for the message of a full disk)."""
    with atomic_path(path, size) as tmp:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: PathLike, text: str) -> Path:
    data = text.encode("utf-8")
    return atomic_write(path, lambda f: f.write(data), len(data))
