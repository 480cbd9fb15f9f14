"""Selective scan with several backends behind one signature.

``reference``  sequential float64 loop: the definition, for tests.
``torch``      stable chunked scan in PyTorch: the CPU path and the GPU fallback.
``triton``     fused GPU kernels (needs CUDA and Triton).
``auto``       ``triton`` for CUDA tensors when Triton is importable, else ``torch``.
The environment variable ``MSVMUNET_SCAN_BACKEND`` overrides ``auto``.
"""

from __future__ import annotations

import os
from typing import Callable, NamedTuple

from torch import Tensor

from ...errors import ConfigError

BACKENDS = ("reference", "torch", "triton")


class Backend(NamedTuple):
    selective_scan: Callable[..., Tensor]
    ss2d_scan: Callable[..., Tensor]


_LOADED: dict[str, Backend | str] = {}


def _load(name: str) -> Backend:
    """The backend's functions, imported once; a backend that cannot load keeps its error message.

    A plain dict, not ``functools.lru_cache``: torch.compile traces the dispatch without a warning."""
    if name not in _LOADED:
        try:
            _LOADED[name] = _import(name)
        except ConfigError as err:
            _LOADED[name] = str(err)
    found = _LOADED[name]
    if isinstance(found, str):
        raise ConfigError(found)
    return found


def _import(name: str) -> Backend:
    if name == "reference":
        from .reference import selective_scan_reference, ss2d_scan_reference

        return Backend(selective_scan_reference, ss2d_scan_reference)
    if name == "torch":
        from .torch_chunked import selective_scan_torch, ss2d_scan_torch

        return Backend(selective_scan_torch, ss2d_scan_torch)
    if name == "triton":
        try:
            from . import triton_scan as module
        except ImportError as err:
            raise ConfigError(
                f"scan backend 'triton' needs the triton package ({err}); install it with "
                "'pip install triton' or use backend='torch'"
            ) from err
        return Backend(module.selective_scan_triton, module.ss2d_scan_triton)
    raise ConfigError(f"unknown scan backend {name!r}; choose one of {('auto',) + BACKENDS}")


def triton_available() -> bool:
    try:
        _load("triton")
    except ConfigError:
        return False
    return True


def resolve_backend(backend: str, x: Tensor) -> str:
    """The backend ``backend`` stands for, for a tensor on ``x``'s device."""
    if backend == "auto":
        backend = os.environ.get("MSVMUNET_SCAN_BACKEND", "auto")
    if backend == "auto":
        return "triton" if x.is_cuda and triton_available() else "torch"
    if backend not in BACKENDS:
        raise ConfigError(f"unknown scan backend {backend!r}; choose one of {('auto',) + BACKENDS}")
    return backend


def _check_scan_shapes(u, delta, A, B, C, D, delta_bias) -> None:
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(f"u and delta must both be (B, K*D, L); got {tuple(u.shape)} and {tuple(delta.shape)}")
    batch, channels, length = u.shape
    if A.dim() != 2 or A.shape[0] != channels:
        raise ValueError(f"A must be (K*D, N) = ({channels}, N); got {tuple(A.shape)}")
    state = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if t.dim() != 4 or t.shape[0] != batch or t.shape[2] != state or t.shape[3] != length:
            raise ValueError(f"{name} must be (B, K, N, L) = ({batch}, K, {state}, {length}); got {tuple(t.shape)}")
        if channels % t.shape[1]:
            raise ValueError(f"{name} has K={t.shape[1]} groups, which does not divide K*D={channels}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and tuple(t.shape) != (channels,):
            raise ValueError(f"{name} must be (K*D,) = ({channels},); got {tuple(t.shape)}")


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = True,
    backend: str = "auto",
) -> Tensor:
    """y = selective_scan(...) with the official shapes; returns float32 (float64 for float64 inputs).

    u, delta: (B, K*D, L); A: (K*D, N); B, C: (B, K, N, L); D, delta_bias: (K*D,).
    """
    _check_scan_shapes(u, delta, A, B, C, D, delta_bias)
    fn = _load(resolve_backend(backend, u)).selective_scan
    return fn(u, delta, A, B, C, D, delta_bias, delta_softplus)


def ss2d_scan(
    x: Tensor,
    x_proj_weight: Tensor,
    dt_projs_weight: Tensor,
    dt_projs_bias: Tensor,
    A_logs: Tensor,
    Ds: Tensor,
    backend: str = "auto",
) -> Tensor:
    """The SS2D core: cross-scan, projections, selective scan and cross-merge in one call.

    x: (B, H, W, D) channel-last; x_proj_weight: (4, R + 2N, D); dt_projs_weight: (4, D, R);
    dt_projs_bias: (4, D); A_logs: (4*D, N); Ds: (4*D,) -> y: (B, H, W, D), the sum of the four
    directions at each pixel (A = -exp(A_logs), delta = softplus(dt + dt_projs_bias)), summed in
    fp32 and returned in x's dtype when that is 16-bit (as the official kernel returns y), else
    float32 (float64 from the reference backend).
    """
    fn = _load(resolve_backend(backend, x)).ss2d_scan
    return fn(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds)


__all__ = ["BACKENDS", "resolve_backend", "selective_scan", "ss2d_scan", "triton_available"]
