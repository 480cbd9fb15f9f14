"""Small phantom datasets written once per test session."""

from __future__ import annotations

import pytest

from msvmunet.data import make_phantom


@pytest.fixture(scope="session")
def tiny_phantom(tmp_path_factory):
    """6 volumes (4 train, 2 test) of 12 slices at 32x32: for mechanics, not for learning."""
    root = tmp_path_factory.mktemp("phantom_tiny")
    make_phantom(root, cases=6, test_cases=2, size=32, slices=12, seed=1)
    return root


@pytest.fixture(scope="session")
def learn_phantom(tmp_path_factory):
    """14 volumes (12 train, 2 test) of 12 slices at 64x64: enough variety to generalise."""
    root = tmp_path_factory.mktemp("phantom_learn")
    make_phantom(root, cases=14, test_cases=2, size=64, slices=12, seed=0)
    return root


def quick_config(data, output, **overrides):
    """The demo recipe shrunk to seconds: nano model, 32x32 slices, a few steps."""
    from msvmunet.engine import resolve_config

    values = dict(data=str(data), output=str(output), image_size=32, batch_size=4, epochs=2, steps_per_epoch=3,
                  eval_batch_size=8, seed=3)
    values.update(overrides)
    return resolve_config("demo", **values)


def nano_checkpoint(path, seed: int = 0, num_classes: int = 9, **extra):
    """An untrained ``nano`` checkpoint (``extra``: stored values such as ``preprocessing``), for mechanics."""
    import torch

    from msvmunet import create_model, save_model

    torch.manual_seed(seed)
    save_model(create_model("nano", num_classes=num_classes), path, **extra)
    return path
