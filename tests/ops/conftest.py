"""Fixtures of the operator tests.

Without CUDA the Triton kernels run in Triton's interpreter on CPU tensors. The interpreter is
chosen when the kernels are decorated, so the variable is set here, before any test module of
this folder imports them.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
