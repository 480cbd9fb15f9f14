"""Atomic file writing, for every file the package writes: readers see the old file or the new one,
never a partial one (an interrupted or killed writer leaves the old file in place)."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` (same file ending, for writers that look at it), renamed onto
    ``path`` when the block succeeds and removed when it fails. Creates parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path: PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write`` on a binary file object, flushed to disk, then put in place of ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))
