"""Proof that the whole pipeline learns: a tiny model on a tiny phantom, on the CPU, in under a minute."""

from __future__ import annotations

from msvmunet.engine import evaluate, train

from .conftest import quick_config


def test_tiny_model_learns_the_phantom(learn_phantom, tmp_path):
    # 12 training volumes of 12 slices at 64x64, 30 epochs of the demo recipe (no augmentation)
    config = quick_config(learn_phantom, tmp_path / "run", image_size=64, batch_size=16, epochs=30,
                          steps_per_epoch=None, lr=3e-3, seed=0)
    run_dir = train(config)
    summaries = evaluate(run_dir / "final.pt", learn_phantom, output=tmp_path / "eval", protocols=("paper",),
                         overlays=0, boxplot=False, quiet=True)
    summary = summaries["paper"]
    assert summary.n_cases == 2  # the held-out test volumes
    mean_dice = summary.mean["dice"].mean
    assert mean_dice >= 0.8, f"mean Dice {mean_dice:.3f} on held-out volumes"
