"""The torch backend against the float64 definition: outputs and every gradient."""

from __future__ import annotations

import pytest
import torch

from msvmunet.errors import ConfigError
from msvmunet.ops import cross_merge, cross_scan, scan_orders, selective_scan, ss2d_scan
from msvmunet.ops.selective_scan import torch_chunked
from msvmunet.ops.selective_scan.torch_chunked import linear_scan

from ..conftest import rel_err


def make_inputs(batch=2, groups=4, dim=3, length=49, state=1, dtype=torch.float32, delta_scale=1.0, delta_shift=0.0):
    channels = groups * dim
    return dict(
        u=torch.randn(batch, channels, length, dtype=dtype),
        delta=(torch.randn(batch, channels, length) * delta_scale + delta_shift).to(dtype),
        A=-torch.exp(torch.randn(channels, state)),  # float32, as the model passes it
        B=torch.randn(batch, groups, state, length, dtype=dtype),
        C=torch.randn(batch, groups, state, length, dtype=dtype),
        D=torch.randn(channels),
        delta_bias=torch.randn(channels) * 0.5,
    )


def run(backend, inputs, upstream=None):
    """Output and, given an upstream gradient, the gradients of every input."""
    grad = upstream is not None
    leaves = {k: v.detach().clone().requires_grad_(grad) for k, v in inputs.items()}
    y = selective_scan(**leaves, backend=backend)
    if not grad:
        return y, {}
    (y * upstream.to(y.dtype)).sum().backward()
    return y, {k: v.grad for k, v in leaves.items()}


def upstream_for(inputs):
    return torch.randn(inputs["u"].shape, dtype=torch.float64)


@pytest.mark.parametrize("length", [1, 49, 63, 3136], ids=lambda x: f"L{x}")
@pytest.mark.parametrize("state", [1, 2, 4], ids=lambda x: f"N{x}")
def test_torch_matches_reference_outputs_and_gradients(length, state):
    inputs = make_inputs(batch=1 if length > 1000 else 2, dim=2 if length > 1000 else 3, length=length, state=state)
    upstream = upstream_for(inputs)
    y_ref, g_ref = run("reference", inputs, upstream)
    y, g = run("torch", inputs, upstream)
    assert y.dtype == torch.float32
    assert rel_err(y, y_ref) < 1e-5
    for name in g_ref:
        assert g[name].dtype == inputs[name].dtype
        assert torch.isfinite(g[name]).all(), name
        assert rel_err(g[name], g_ref[name]) < 1e-5, name


def test_gradcheck_float64_multi_level_chunks():
    # L = 70 with chunks of 8 exercises padding and two levels of carries
    inputs = make_inputs(batch=1, groups=2, dim=1, length=70, state=2, dtype=torch.float64)
    inputs = {k: v.double().requires_grad_() for k, v in inputs.items()}
    names = list(inputs)

    def f(*args):
        return selective_scan(**dict(zip(names, args)), backend="torch")

    assert torch.autograd.gradcheck(f, tuple(inputs.values()), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("state", [1, 16])
def test_large_delta_is_stable(state):
    # softplus(delta) ~ 5-10 and |A| up to ~16: |A| * sum(delta) per chunk far above the ~88 where
    # an exp(cumsum) formulation overflows to inf / NaN
    inputs = make_inputs(batch=1, length=300, state=state, delta_scale=1.0, delta_shift=7.5)
    inputs["A"] = -torch.arange(1, state + 1, dtype=torch.float32).repeat(inputs["A"].shape[0], 1)
    y_ref, _ = run("reference", inputs)
    y, grads = run("torch", inputs, upstream_for(inputs))
    assert torch.isfinite(y).all()
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert rel_err(y, y_ref) < 1e-5


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 1e-5), (torch.float16, 1e-5)], ids=["bf16", "fp16"])
def test_low_precision_inputs_accumulate_in_float32(dtype, tol):
    inputs = make_inputs(length=63, state=2, dtype=dtype)
    y_ref, _ = run("reference", inputs)  # the definition on the same (rounded) values
    y, grads = run("torch", inputs, upstream_for(inputs))
    assert y.dtype == torch.float32
    assert rel_err(y, y_ref) < tol
    for name in ("u", "delta", "B", "C"):
        assert grads[name].dtype == dtype and torch.isfinite(grads[name]).all()


def test_every_output_element_is_written(monkeypatch):
    real = torch.empty_like

    def poisoned(*args, **kwargs):
        return real(*args, **kwargs).fill_(float("nan"))

    monkeypatch.setattr(torch_chunked.torch, "empty_like", poisoned)
    for length in (1, 5, 8, 9, 63, 200):
        a, b = torch.rand(length, 7), torch.randn(length, 7)
        h = linear_scan(a, b)
        ref, state = [], torch.zeros(7)
        for t in range(length):
            state = a[t] * state + b[t]
            ref.append(state)
        assert torch.allclose(h, torch.stack(ref), atol=1e-5), length


def test_no_delta_bias_no_softplus_no_D():
    inputs = make_inputs(length=20, state=2)
    inputs.update(D=None, delta_bias=None)
    inputs["delta"] = inputs["delta"].abs()
    ref = selective_scan(**inputs, delta_softplus=False, backend="reference")
    out = selective_scan(**inputs, delta_softplus=False, backend="torch")
    assert rel_err(out, ref) < 1e-5


def test_cross_scan_orders_and_merge_is_its_adjoint():
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    xs = cross_scan(x)
    assert xs.shape == (2, 4, 3, 35)
    assert torch.equal(xs[:, 0, :, 8], x[:, :, 1, 1])  # row-major: step 8 = (1, 1)
    assert torch.equal(xs[:, 1, :, 8], x[:, :, 3, 1])  # column-major: step 8 = (row 3, col 1)
    assert torch.equal(xs[:, 2], xs[:, 0].flip(-1)) and torch.equal(xs[:, 3], xs[:, 1].flip(-1))
    order = scan_orders(5, 7)
    assert torch.equal(xs, x.flatten(2)[:, :, order].permute(0, 2, 1, 3))
    ys = torch.randn_like(xs)
    lhs = (xs * ys).sum()
    rhs = (x.flatten(2) * cross_merge(ys, 5, 7)).sum()
    assert torch.allclose(lhs, rhs)


@pytest.mark.parametrize("hw", [(1, 1), (4, 4), (5, 7), (9, 3)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("state", [1, 3])
def test_ss2d_torch_matches_reference(hw, state):
    dim, rank = 5, 2
    params = dict(
        x=torch.randn(2, *hw, dim),
        x_proj_weight=torch.randn(4, rank + 2 * state, dim) * 0.5,
        dt_projs_weight=torch.randn(4, dim, rank) * 0.5,
        dt_projs_bias=torch.randn(4, dim) * 0.5,
        A_logs=torch.randn(4 * dim, state) * 0.5,
        Ds=torch.randn(4 * dim),
    )
    grads = {}
    outs = {}
    for backend in ("reference", "torch"):
        leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
        y = ss2d_scan(**leaves, backend=backend)
        torch.manual_seed(3)
        (y * torch.randn(y.shape, dtype=torch.float64).to(y.dtype)).sum().backward()
        outs[backend] = y
        grads[backend] = {k: v.grad for k, v in leaves.items()}
    assert outs["torch"].shape == (2, *hw, dim) and outs["torch"].dtype == torch.float32
    assert rel_err(outs["torch"], outs["reference"]) < 1e-5
    for name in params:
        assert rel_err(grads["torch"][name], grads["reference"][name]) < 1e-5, name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_ss2d_returns_a_16_bit_activations_dtype(dtype):
    # as the official kernel returns y: the four directions summed in fp32, rounded once to x's dtype
    torch.manual_seed(0)
    params = dict(x_proj_weight=torch.randn(4, 4, 6) * 0.5, dt_projs_weight=torch.randn(4, 6, 2) * 0.5,
                  dt_projs_bias=torch.randn(4, 6) * 0.5, A_logs=torch.randn(24, 1) * 0.5, Ds=torch.randn(24))
    x = torch.randn(2, 3, 5, 6)
    y32 = ss2d_scan(x, **params, backend="torch")
    y16 = ss2d_scan(x.to(dtype), **{k: v.to(dtype) for k, v in params.items()}, backend="torch")
    assert y32.dtype == torch.float32 and y16.dtype == dtype
    assert rel_err(y16.float(), y32) < 2e-2


def test_bad_backend_and_shapes_are_clear_errors():
    inputs = make_inputs(length=8)
    with pytest.raises(ConfigError, match="unknown scan backend 'cuda'"):
        selective_scan(**inputs, backend="cuda")
    bad = dict(inputs, B=inputs["B"][..., :5])
    with pytest.raises(ValueError, match=r"B must be \(B, K, N, L\)"):
        selective_scan(**bad, backend="torch")
    with pytest.raises(ValueError, match="A must be"):
        selective_scan(**dict(inputs, A=inputs["A"][:3]), backend="torch")


@pytest.mark.parametrize("length", [1, 9, 70])
def test_exported_scan_form_matches_the_chunked_scan(length):
    # the form torch.export records (one scan operator, an ONNX Scan), run eagerly
    a, b = torch.rand(length, 5), torch.randn(length, 5)
    h = torch_chunked.linear_scan_exported(a, b)
    assert h.shape == (length, 5) and rel_err(h, linear_scan(a, b)) < 1e-6
