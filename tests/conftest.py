"""Shared test fixtures.

Without CUDA the Triton kernels run in Triton's interpreter on CPU tensors. The interpreter is chosen
when the kernels are decorated, so the variable is set here, before any test module imports them
(the operator tests run them; others, such as the benchmark CLI's, import them).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parents[1]


def reference_dir() -> Path:
    """Outputs of the official code, kept beside the checkout in ``../shared/reference``."""
    return Path(os.environ.get("MSVMUNET_REFERENCE_DIR", ROOT.parent / "shared" / "reference"))


@pytest.fixture(scope="session")
def reference() -> Path:
    """The reference folder; its tests skip (with the reason) when it is absent, unless
    ``MSVMUNET_REQUIRE_REFERENCE=1`` (CI) makes the absence a failure."""
    path = reference_dir()
    if not (path / "official_small.pt").is_file():
        message = f"reference data not found in {path}; set MSVMUNET_REFERENCE_DIR to the folder holding official_small.pt"
        if os.environ.get("MSVMUNET_REQUIRE_REFERENCE", "") not in ("", "0"):
            pytest.fail(message + " (MSVMUNET_REQUIRE_REFERENCE is set)")
        pytest.skip(message)
    return path


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-300)).item()
