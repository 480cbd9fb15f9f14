"""The offline demo: make the phantom, train a small model on it, evaluate, write the report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .config import resolve_config
from .evaluate import evaluate
from .trainer import train

# the phantom of the demo: small enough to train on a laptop CPU in a few minutes
DEMO_PHANTOM = dict(cases=16, test_cases=4, size=96, slices=16, seed=0)


def run_demo(output: str | Path = "runs/demo", *, device: str = "auto", epochs: int | None = None,
             quiet: bool = False) -> dict[str, Any]:
    """Phantom -> ``msvmunet train --preset demo`` -> ``msvmunet evaluate``; returns the summaries."""
    from ..data import make_phantom

    start = time.perf_counter()
    output = Path(output)
    data_dir = output / "phantom"
    if not (data_dir / "test_vol.txt").exists() and not any(data_dir.glob("**/*.h5")):
        make_phantom(data_dir, **DEMO_PHANTOM)
    config = resolve_config("demo", data=str(data_dir), output=str(output / "train"), device=device, epochs=epochs)
    run_dir = train(config, force=True)  # the demo's own folder: a new demo replaces the last one
    summaries = evaluate(run_dir / "final.pt", data_dir, output=output / "evaluation", device=device,
                         batch_size=config.eval_batch_size, quiet=quiet)
    if not quiet:
        print(f"demo finished in {time.perf_counter() - start:.0f} s; reports in {output / 'evaluation'}")
    return summaries
