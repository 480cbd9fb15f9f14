"""The Triton backend against the float64 reference and the torch backend: outputs and all gradients.

On a GPU the kernels run compiled, at small and realistic shapes; without one they run in Triton's
interpreter (see tests/conftest.py) at small shapes. Every buffer the kernels write starts as NaN.
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton", reason="Triton is not installed (pip install 'msvm-unet[triton]')")
tl = pytest.importorskip("triton.language")

from msvmunet.ops.selective_scan import resolve_backend, selective_scan, ss2d_scan  # noqa: E402
from msvmunet.ops.selective_scan import triton_kernels, triton_scan  # noqa: E402
from msvmunet.ops.selective_scan.reference import selective_scan_reference, ss2d_scan_reference  # noqa: E402
from msvmunet.ops.selective_scan.torch_chunked import (selective_scan_torch, ss2d_projections,  # noqa: E402
                                                        ss2d_scan_torch)

ON_GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if ON_GPU else "cpu")
gpu_only = pytest.mark.skipif(not ON_GPU, reason="needs a CUDA device")

# The default block length here (16 in the interpreter, 256 compiled): "3 blocks" is 2 blocks and a bit.
BLOCK_L = triton_scan._launch_config(1, 1, 1 << 20, 64, False).block_l
LENGTHS = {"L=1": 1, "L=7": 7, "L=63": 63, "L=3blocks": 2 * BLOCK_L + 5}
# norm-relative error allowed for an output or gradient of this dtype (fp32 state and accumulation
# throughout: the low-precision cases only round the returned gradients)
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}
GRAD_TOL = {torch.float32: 1e-4, torch.bfloat16: 1e-2, torch.float16: 2e-3}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@pytest.fixture(autouse=True)
def nan_buffers(monkeypatch):
    """Every buffer the kernels write starts as NaN, so a value they forget shows up."""
    if not ON_GPU and not triton_scan._INTERPRET:
        pytest.fail("the triton kernels were imported before TRITON_INTERPRET=1 was set; see tests/conftest.py")
    alloc = triton_scan._alloc

    def poisoned(shape, device, dtype=torch.float32):
        return alloc(shape, device, dtype).fill_(float("nan"))

    monkeypatch.setattr(triton_scan, "_alloc", poisoned)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def assert_close(name: str, out: torch.Tensor, ref: torch.Tensor, tol: float) -> None:
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(out).all(), f"{name}: non-finite values"
    if ref.abs().max() == 0:  # e.g. dA at L = 1: the reference is exactly 0, fp32 rounding is not
        assert out.abs().max() < 1e-5, f"{name}: {out.abs().max():.2e} where the reference is exactly 0"
        return
    err = rel_err(out, ref)
    assert err < tol, f"{name}: relative error {err:.2e} >= {tol:.0e}"


def scan_inputs(batch=2, groups=2, group_dim=5, state=1, length=63, dtype=torch.float32, delta_shift=-1.0,
                with_d=True, with_bias=True) -> dict[str, torch.Tensor | None]:
    """Fresh random inputs of selective_scan (A and D in fp32, the rest in ``dtype``), requiring grad."""
    channels = groups * group_dim

    def make(*shape, scale=1.0, shift=0.0, dt=dtype):
        return (torch.randn(*shape, device=DEVICE) * scale + shift).to(dt).requires_grad_()

    return {
        "u": make(batch, channels, length),
        "delta": make(batch, channels, length, scale=0.5, shift=delta_shift),
        "A": (-torch.exp(torch.randn(channels, state, device=DEVICE) * 0.5)).requires_grad_(),
        "B": make(batch, groups, state, length),
        "C": make(batch, groups, state, length),
        "D": make(channels, dt=torch.float32) if with_d else None,
        "delta_bias": make(channels, scale=0.5, dt=torch.float32) if with_bias else None,
    }


def check_scan(inputs: dict, softplus: bool = True, against=(selective_scan_reference,)) -> None:
    """selective_scan_triton equals each function in ``against`` on y and on every gradient."""
    names = [k for k, v in inputs.items() if v is not None]
    args = list(inputs.values())
    y = triton_scan.selective_scan_triton(*args, softplus)
    assert y.dtype == torch.float32
    dy = torch.randn_like(y)
    grads = torch.autograd.grad(y, [inputs[k] for k in names], dy)
    for fn in against:
        ref = fn(*args, softplus)
        assert_close(f"{fn.__name__}: y", y, ref, TOL[torch.float32])
        ref_grads = torch.autograd.grad(ref, [inputs[k] for k in names], dy.to(ref.dtype))
        for name, grad, ref_grad in zip(names, grads, ref_grads):
            assert grad.dtype == inputs[name].dtype, f"d{name} came back as {grad.dtype}"
            assert_close(f"{fn.__name__}: d{name}", grad, ref_grad, GRAD_TOL[inputs[name].dtype])


@pytest.mark.parametrize("state", [1, 2, 4], ids=lambda n: f"N={n}")
@pytest.mark.parametrize("length", LENGTHS.values(), ids=LENGTHS.keys())
def test_scan_fp32(length, state):
    check_scan(scan_inputs(state=state, length=length))


@pytest.mark.parametrize("state", [1, 2], ids=lambda n: f"N={n}")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_scan_low_precision_inputs(dtype, state):
    check_scan(scan_inputs(state=state, length=LENGTHS["L=3blocks"], dtype=dtype))


def test_scan_matches_torch_backend():
    check_scan(scan_inputs(state=2, length=LENGTHS["L=3blocks"]), against=(selective_scan_reference,
                                                                           selective_scan_torch))


def test_scan_without_d_bias_softplus():
    check_scan(scan_inputs(state=2, length=40, with_d=False, with_bias=False, delta_shift=0.5), softplus=False)


@triton.jit
def _softplus_kernel(z_ptr, y_ptr, g_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    z = tl.load(z_ptr + offs, mask=offs < n, other=0.0)
    tl.store(y_ptr + offs, triton_kernels._softplus(z), mask=offs < n)
    tl.store(g_ptr + offs, triton_kernels._softplus_grad(z), mask=offs < n)


def test_softplus_matches_torch():
    """The kernels' softplus (log1p as a polynomial) and its derivative, over the whole range of z, against
    torch in float64: within 2 fp32 rounding steps (relative) plus the error of exp(-|z|) itself on a
    GPU (its fp32 argument is scaled by log2(e) and rounded: about |z| * 2**-24 relative, allowed
    twice); exactly z and 1 above the threshold."""
    z = torch.cat([torch.linspace(-30, 30, 6001), torch.tensor([-1e-6, 0.0, 1e-6, 19.999, 20.0, 20.001, 88.0])])
    z = z.to(DEVICE)
    y, g = torch.empty_like(z), torch.empty_like(z)
    _softplus_kernel[(triton.cdiv(z.numel(), 1024),)](z, y, g, z.numel(), BLOCK=1024)
    z64 = z.double()
    ref = torch.nn.functional.softplus(z64)
    ref_grad = torch.sigmoid(z64).where(z64 <= 20, torch.ones_like(z64))
    bound = 2.5e-7 + z64.abs() * 2.0**-23
    assert ((y.double() - ref).abs() / ref <= bound).all()
    assert ((g.double() - ref_grad).abs() / ref_grad <= bound).all()
    assert torch.equal(y[z > 20], z[z > 20]) and (g[z > 20] == 1).all()


def test_scan_large_delta():
    # softplus(delta) ~ 5..10: the decays underflow towards 0, nothing may turn NaN or inf
    inputs = scan_inputs(state=2, length=45, delta_shift=7.5)
    with torch.no_grad():
        inputs["delta"].uniform_(5.0, 10.0)
    check_scan(inputs)


def test_scan_positive_and_odd_A():
    # the recurrence holds for any A (N = 3 is not a power of two)
    inputs = scan_inputs(state=3, length=20)
    with torch.no_grad():
        inputs["A"].uniform_(-0.5, 0.3)
    check_scan(inputs)


def test_scan_strided_inputs():
    # u and delta as views with a non-unit step stride, B and C sliced from a wider buffer
    base = scan_inputs(state=2, length=30)
    batch, channels, length = base["u"].shape
    u = torch.randn(batch, length, channels, device=DEVICE).transpose(1, 2).requires_grad_()
    bc = torch.randn(batch, 2, 5, length, device=DEVICE)
    inputs = dict(base, u=u, B=bc[:, :, :2].requires_grad_(), C=bc[:, :, 3:].requires_grad_())
    check_scan(inputs)


def test_scan_other_tiles(monkeypatch):
    # tile shapes other than the default: channel blocks of 2 and 8, a longer block, no prefetch
    monkeypatch.setattr(triton_scan, "tuning",
                        triton_scan.Tuning(block_l=32, fwd_block_d=8, bwd_block_d=2, prefetch=False))
    check_scan(scan_inputs(state=2, group_dim=11, length=70))


def test_scan_deterministic():
    inputs = scan_inputs(state=2, length=LENGTHS["L=3blocks"])
    args = list(inputs.values())
    runs = []
    for _ in range(2):
        y = triton_scan.selective_scan_triton(*args)
        runs.append([y, *torch.autograd.grad(y.square().sum(), [inputs[k] for k in ("u", "delta", "A", "B")])])
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_dispatch():
    inputs = scan_inputs(state=1, length=9)
    y = selective_scan(*inputs.values(), backend="triton")
    assert torch.equal(y, triton_scan.selective_scan_triton(*inputs.values()))
    assert resolve_backend("auto", inputs["u"]) == ("triton" if ON_GPU else "torch")


def ss2d_inputs(batch=2, height=3, width=5, dim=6, state=1, rank=2, dtype=torch.float32):
    def make(*shape, scale=1.0):
        return (torch.randn(*shape, device=DEVICE) * scale).to(dtype).requires_grad_()

    return {
        "x": make(batch, height, width, dim),
        "x_proj_weight": make(4, rank + 2 * state, dim, scale=dim**-0.5),
        "dt_projs_weight": make(4, dim, rank, scale=rank**-0.5),
        "dt_projs_bias": make(4, dim, scale=0.5),
        "A_logs": make(4 * dim, state, scale=0.5),
        "Ds": make(4 * dim),
    }


def check_ss2d(inputs: dict, against=(ss2d_scan_reference,), tol: float = 1e-5, grad_tol: float = 1e-4) -> None:
    args = list(inputs.values())
    y = triton_scan.ss2d_scan_triton(*args)
    x_dtype = inputs["x"].dtype
    assert y.dtype == (x_dtype if x_dtype in (torch.bfloat16, torch.float16) else torch.float32)
    assert y.shape == inputs["x"].shape
    dy = torch.randn_like(y)
    grads = torch.autograd.grad(y, args, dy)
    for fn in against:
        ref = fn(*args)
        assert_close(f"{fn.__name__}: y", y, ref, tol)
        for name, grad, ref_grad in zip(inputs, grads, torch.autograd.grad(ref, args, dy.to(ref.dtype))):
            assert grad.dtype == inputs[name].dtype, f"d{name} came back as {grad.dtype}"
            assert_close(f"{fn.__name__}: d{name}", grad, ref_grad, grad_tol)


MAPS = {"1x1": (1, 1), "3x5": (3, 5), "5x3": (5, 3), "7x9": (7, 9)}


@pytest.mark.parametrize("per_thread", (False, True), ids=("tiled", "per-thread"))
@pytest.mark.parametrize("hw", MAPS.values(), ids=MAPS.keys())
def test_ss2d(hw, per_thread, monkeypatch):
    monkeypatch.setattr(triton_scan, "tuning", triton_scan.Tuning(per_thread=per_thread))
    check_ss2d(ss2d_inputs(height=hw[0], width=hw[1]))


@pytest.mark.parametrize("state", [2, 4], ids=lambda n: f"N={n}")
def test_ss2d_states(state):
    check_ss2d(ss2d_inputs(height=4, width=9, dim=5, state=state))


TILED = dict(per_thread=False)
SPLITS = {"tiled-dirs=2": dict(TILED, cross_dirs=2), "tiled-dirs=1": dict(TILED, cross_dirs=1),
          "tiled-no-prefetch": dict(TILED, prefetch=False), "per-thread": {},
          "per-thread-one-chunk-dirs=2": dict(chunks=1, cross_dirs=2), "per-thread-chunks=3": dict(chunks=3),
          "per-thread-block=8": dict(block_l=8, chunks=2), "per-thread-stages=3": dict(stages=3)}


@pytest.mark.parametrize("state", (1, 2), ids=("N=1", "N=2"))
@pytest.mark.parametrize("tune", SPLITS.values(), ids=SPLITS.keys())
def test_ss2d_launch_variants(tune, state, monkeypatch):
    # the tiled kernels: the 4 directions split over 2 or 4 programs per channel block (summed slots),
    # and the forward without prefetching; the one-channel-per-thread kernels (the default for N = 1;
    # N = 2 stays tiled): one chunk with directions over 2 programs, fewer chunks, longer blocks,
    # pipelined block loops
    monkeypatch.setattr(triton_scan, "tuning", triton_scan.Tuning(**tune))
    check_ss2d(ss2d_inputs(height=5, width=4, dim=5, state=state))


class _GridRecorder:
    """Stands in for a Triton kernel and notes the grid of every launch."""

    def __init__(self, kernel, grids: list) -> None:
        self.kernel, self.grids = kernel, grids

    def __getitem__(self, grid):
        self.grids.append(grid)
        return self.kernel[grid]


@pytest.mark.parametrize("fwd,bwd", [(1, 3), (3, 2)])
def test_ss2d_chunks_per_pass(fwd, bwd, monkeypatch):
    # the forward and the backward split the 5 blocks of 4 steps into their own chunk counts
    grids = {name: [] for name in ("_cross_fwd_kernel", "_cross_bwd_kernel")}
    for name, seen in grids.items():
        monkeypatch.setattr(triton_scan, name, _GridRecorder(getattr(triton_scan, name), seen))
    monkeypatch.setattr(triton_scan, "tuning", triton_scan.Tuning(chunks=fwd, bwd_chunks=bwd))
    check_ss2d(ss2d_inputs(height=5, width=4, dim=5))
    assert {grid[2] for grid in grids["_cross_fwd_kernel"]} == {fwd}
    assert {grid[2] for grid in grids["_cross_bwd_kernel"]} == {bwd}


def test_ss2d_matches_torch_backend():
    check_ss2d(ss2d_inputs(height=6, width=7, dim=6, state=2), against=(ss2d_scan_reference, ss2d_scan_torch))


@pytest.mark.parametrize("narrow", [True, False], ids=["bf16-slots", "fp32-slots"])
def test_ss2d_bf16_model(narrow, monkeypatch):
    # a model cast to bf16: input, weights and projections in bf16, the scan in fp32, as the torch backend;
    # by default each direction's y is kept in bf16 (as the official kernel returns it), then summed in fp32
    monkeypatch.setattr(triton_scan, "tuning", triton_scan.Tuning(narrow_slots=narrow))
    check_ss2d(ss2d_inputs(height=5, width=6, dtype=torch.bfloat16), against=(ss2d_scan_torch,),
               tol=1e-2 if narrow else 1e-5, grad_tol=1e-2)


def test_ss2d_autocast():
    # bf16 projections under autocast: the scan reads them as they come and returns fp32,
    # equal to the torch backend fed the same bf16 projections
    inputs = ss2d_inputs(height=5, width=6, dim=6, state=2)
    args = list(inputs.values())
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        y = ss2d_scan(*args, backend="triton")
        ref = ss2d_scan(*args, backend="torch")
    assert y.dtype == torch.float32
    assert_close("y", y, ref, 1e-5)
    dy = torch.randn_like(y)
    for name, grad, ref_grad in zip(inputs, torch.autograd.grad(y, args, dy), torch.autograd.grad(ref, args, dy)):
        assert_close(f"d{name}", grad, ref_grad, 2e-2)


@pytest.mark.parametrize("tune", [{}, dict(per_thread=False, cross_dirs=1)], ids=["per-thread", "tiled-dirs=1"])
def test_ss2d_narrow_slots(tune, monkeypatch):
    # Tuning(narrow_slots=True) under autocast: each direction's y and du kept in bf16, summed in fp32,
    # y returned in bf16 (the activation's dtype): within bf16 rounding of the torch backend, and not
    # the fp32-slot result (the option is in effect)
    inputs = ss2d_inputs(height=5, width=6, dim=6, state=1)
    inputs["x"] = inputs["x"].detach().bfloat16().requires_grad_()  # the activation arrives in bf16, as in the model
    args = list(inputs.values())
    runs = {}
    for narrow in (False, True):
        monkeypatch.setattr(triton_scan, "tuning", triton_scan.Tuning(narrow_slots=narrow, **tune))
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            y = ss2d_scan(*args, backend="triton")
        runs[narrow] = (y, torch.autograd.grad(y, args, torch.ones_like(y)))
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        ref = ss2d_scan(*args, backend="torch")
    ref_grads = torch.autograd.grad(ref, args, torch.ones_like(ref))
    y, grads = runs[True]
    assert y.dtype == torch.bfloat16 and not torch.equal(y, runs[False][0])
    assert_close("y", y, ref, 1e-2)
    for name, grad, ref_grad in zip(inputs, grads, ref_grads):
        assert_close(f"d{name}", grad, ref_grad, 2e-2)


@gpu_only
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_scan_realistic_shape(dtype):
    # one stage of the paper's model: K*D = 4 * 48, a 56x56 map, N = 1 (the torch backend as reference)
    check_scan(scan_inputs(batch=2, groups=4, group_dim=48, state=1, length=3136, dtype=dtype),
               against=(selective_scan_torch,))


@gpu_only
@pytest.mark.parametrize("state", [1, 16], ids=lambda n: f"N={n}")
def test_scan_wide_channels(state):
    check_scan(scan_inputs(batch=3, groups=4, group_dim=100, state=state, length=777), against=(selective_scan_torch,))


GPU_TUNINGS = {"tiled": TILED, "per-thread": {}, "per-thread-one-chunk-dirs=2": dict(chunks=1, cross_dirs=2),
               "per-thread-chunks=5-block=8": dict(chunks=5, block_l=8), "per-thread-stages=3": dict(stages=3)}
# (narrow_slots changes the numerics: tested against the torch backend at bf16 tolerances in test_ss2d_narrow_slots)


@gpu_only
@pytest.mark.parametrize("tune", GPU_TUNINGS.values(), ids=GPU_TUNINGS.keys())
@pytest.mark.parametrize("hw", [(56, 56), (28, 36)], ids=["56x56", "28x36"])
def test_ss2d_realistic_shape(hw, tune, monkeypatch):
    monkeypatch.setattr(triton_scan, "tuning", triton_scan.Tuning(**tune))
    check_ss2d(ss2d_inputs(batch=2, height=hw[0], width=hw[1], dim=96, state=1, rank=6), against=(ss2d_scan_torch,))


@gpu_only
def test_ss2d_per_thread_narrow_channels(monkeypatch):
    # fewer than 32 channels: a tile spreads a pixel's steps over lanes (directions share a slot)
    monkeypatch.setattr(triton_scan, "tuning", triton_scan.Tuning(chunks=1, cross_dirs=4))
    check_ss2d(ss2d_inputs(batch=2, height=13, width=11, dim=12, state=1, rank=2), against=(ss2d_scan_torch,))


@pytest.mark.parametrize("cross", [False, True], ids=["plain", "cross"])
def test_custom_ops_are_consistent_for_compile(cross):
    """The scan is a torch.library op pair: schema and fake (meta) shapes of both ops hold."""
    batch, dim, state = 2, 3, 2
    A = -torch.rand(4 * dim, state, device=DEVICE)
    D = torch.randn(4 * dim, device=DEVICE)
    bias = torch.randn(4 * dim, device=DEVICE)
    if cross:
        height, width, length = 3, 5, 15
        u = torch.randn(batch, length, dim, device=DEVICE)
        delta = torch.randn(batch, length, 4, dim, device=DEVICE)
        B, C = (torch.randn(batch, length, 4, state, device=DEVICE) for _ in range(2))
    else:
        height, width, length = 1, 1, 9
        u, delta = (torch.randn(batch, 4 * dim, length, device=DEVICE) for _ in range(2))
        B, C = (torch.randn(batch, 4, state, length, device=DEVICE) for _ in range(2))
    meta = (cross, height, width, True, triton_scan.launch_plan(batch, state, length, dim, cross))
    result = torch.library.opcheck(triton_scan.scan_fwd, (u, delta, A, B, C, D, bias, *meta))
    assert all(v == "SUCCESS" for v in result.values()), result
    y, carry = triton_scan.scan_fwd(u, delta, A, B, C, D, bias, *meta)
    dy = torch.randn(y.shape[1:] if cross else y.shape, device=DEVICE)
    result = torch.library.opcheck(triton_scan.scan_bwd, (dy, u, delta, A, B, C, D, bias, carry, *meta))
    assert all(v == "SUCCESS" for v in result.values()), result


@pytest.mark.parametrize("tune", [{"block_l": 16}, {"chunks": 1, "cross_dirs": 2}, {"per_thread": False}],
                         ids=["block_l", "slots", "tiled"])
def test_the_plan_is_an_argument_of_the_ops(tune, monkeypatch):
    """A compiled graph keeps the shapes the fake kernels gave it (the carried states' block count, the
    output slots, the partial sums): they must follow the ops' plan argument, which the graph records,
    never the tuning at the time of the call (a graph compiled, or cached, under another tuning would
    then hand the kernels wrong buffers)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    torch.manual_seed(5)
    inputs = ss2d_inputs(height=5, width=4, dim=6)
    expected = ss2d_scan_torch(*inputs.values())
    plan = triton_scan.launch_plan(2, 1, 20, 6, True)  # traced under the default tuning
    with torch.no_grad():
        flat, dts, Bs, Cs = ss2d_projections(inputs["x"], inputs["x_proj_weight"], inputs["dt_projs_weight"])
        A = -torch.exp(inputs["A_logs"])
        args = (flat, dts.contiguous(), A, Bs, Cs, inputs["Ds"], inputs["dt_projs_bias"].reshape(-1), True, 5, 4, True,
                plan)
        monkeypatch.setattr(triton_scan, "tuning", triton_scan.Tuning(**tune))
        assert triton_scan.launch_plan(2, 1, 20, 6, True) != plan
        y, carry = triton_scan.scan_fwd(*args)
        assert carry.shape[2] == 5  # 20 steps in blocks of 4, whatever the tuning says now
        assert y.shape[0] == 4 // triton_scan._Launch.from_list(plan).dirs  # and the plan's output slots
        assert_close("y", y.sum(0).view(expected.shape), expected, 1e-5)
        grads = triton_scan.scan_bwd(torch.randn_like(flat), *args[:7], carry, *args[7:])
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fake = lambda a: mode.from_tensor(a) if isinstance(a, torch.Tensor) else a  # noqa: E731
            fake_y, fake_carry = triton_scan.scan_fwd(*map(fake, args))
            fake_grads = triton_scan.scan_bwd(fake(torch.randn_like(flat)), *map(fake, args[:7]), fake(carry),
                                              *args[7:])
        assert fake_carry.shape == carry.shape and fake_y.shape == y.shape and fake_y.dtype == y.dtype
        assert [(g.shape, g.dtype) for g in fake_grads] == [(g.shape, g.dtype) for g in grads]


def test_ss2d_under_torch_compile():
    """torch.compile (the fast GPU path) traces an SS2D layer, the backend dispatch and the custom scan ops
    (fake shapes, autograd formula) included, into one graph, with the eager outputs and gradients."""
    from msvmunet.models.blocks import SS2D

    torch.manual_seed(3)
    model = SS2D(8, dt_rank=2).to(DEVICE)
    model.scan_backend = "triton"
    x = torch.randn(2, 4, 6, 8, device=DEVICE, requires_grad=True)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    y_eager, y_compiled = model(x), compiled(x)
    assert rel_err(y_compiled, y_eager) < 1e-5
    (g_eager,) = torch.autograd.grad(y_eager.square().sum(), x)
    (g_compiled,) = torch.autograd.grad(y_compiled.square().sum(), x)
    assert rel_err(g_compiled, g_eager) < 1e-4


def test_compiled_ss2d_follows_tuning(monkeypatch):
    """The launch plan is worked out in traced Python: torch.compile guards on the tuning it read, so a
    compiled layer recompiles (with the new plan's shapes) after ``tuning`` changes, and stays correct."""
    from torch._dynamo.testing import CompileCounter

    from msvmunet.models.blocks import SS2D

    torch._dynamo.reset()  # SS2D.forward's compiled variants from earlier tests count towards dynamo's recompile limit
    torch.manual_seed(4)
    model = SS2D(8, dt_rank=2).to(DEVICE)
    model.scan_backend = "triton"
    x = torch.randn(2, 4, 6, 8, device=DEVICE)
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    with torch.no_grad():
        expected = model(x)
        assert rel_err(compiled(x), expected) < 1e-5
        monkeypatch.setattr(triton_scan, "tuning", triton_scan.Tuning(chunks=1, cross_dirs=2))
        assert rel_err(compiled(x), expected) < 1e-5
        assert rel_err(compiled(x), expected) < 1e-5
    assert counter.frame_count == 2  # one graph per tuning, not one per call

