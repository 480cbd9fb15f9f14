"""Training checkpoints: plain dicts (``weights_only=True``), written atomically, resumable."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._files import atomic_write
from ..errors import CheckpointError
from ..models.checkpoints import checkpoint_dict, load_file
from ..models.config import ModelConfig
from .distributed import unwrap


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


def save_training_checkpoint(path: str | Path, *, model, optimizer, scheduler, scaler, epoch: int,
                             train_config: dict, preprocessing: dict | None, classes: list[str],
                             history: list[dict], best: dict | None, **extra: Any) -> Path:
    """Everything needed to resume after ``epoch`` (the number of completed epochs), plus ``extra``
    plain values (e.g. ``selection``: how this checkpoint was chosen)."""
    obj = checkpoint_dict(
        unwrap(model),
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
    return atomic_save(obj, path)


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
