"""Correctness and speed of the triton scan backend at the paper's shapes.

    python benchmarks/bench_scan.py [--out results.json] [--sweep]     # on a CUDA GPU
    TRITON_INTERPRET=1 python benchmarks/bench_scan.py --small         # CPU smoke test

1. Correctness at the real shapes against the torch backend: the selective scan (B=32, K*D=384,
   L=3136, N=1) and the SS2D core (B=32, 56x56, D=96), outputs and all gradients, fp32 and bf16.
2. Timings (median after warm-up; CUDA events through triton.testing.do_bench): selective_scan
   triton and torch, forward and forward+backward; the fused SS2D core against cross_scan +
   selective_scan_triton + cross_merge (the official structure), fp32 and bf16 (autocast).
3. ``--sweep``: the same timings for a few tile configurations (see ``triton_scan.Tuning``).

Exits nonzero when a result differs from the torch backend by more than the tolerance.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# outputs and fp32 gradients; gradients returned in bf16 are rounded to bf16
TOL_OUT, TOL_GRAD = 1e-5, {torch.float32: 1e-4, torch.bfloat16: 1e-2}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="tiny shapes: a smoke test (on CPU: interpret mode)")
    parser.add_argument("--out", type=Path, help="write all numbers to this JSON file")
    parser.add_argument("--sweep", action="store_true", help="also time a few tile configurations")
    return parser.parse_args()


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def bench(fn, device: torch.device) -> float:
    """Median milliseconds of fn()."""
    if device.type == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
    fn()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def scan_inputs(shape: dict, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
    batch, groups, group_dim, state, length = (shape[k] for k in ("batch", "groups", "group_dim", "state", "length"))
    channels = groups * group_dim
    gen = torch.Generator(device=device).manual_seed(0)

    def rand(*size, scale=1.0, shift=0.0, dt=dtype):
        return (torch.randn(*size, generator=gen, device=device) * scale + shift).to(dt).requires_grad_()

    return [
        rand(batch, channels, length),
        rand(batch, channels, length, scale=0.5, shift=-1.0),
        (-torch.exp(torch.randn(channels, state, generator=gen, device=device) * 0.5)).requires_grad_(),
        rand(batch, groups, state, length),
        rand(batch, groups, state, length),
        rand(channels, dt=torch.float32),
        rand(channels, scale=0.5, dt=torch.float32),
    ]


def ss2d_inputs(shape: dict, device: torch.device) -> list[torch.Tensor]:
    batch, height, width, dim, state, rank = (shape[k] for k in ("batch", "height", "width", "dim", "state", "rank"))
    gen = torch.Generator(device=device).manual_seed(0)

    def rand(*size, scale=1.0):
        return (torch.randn(*size, generator=gen, device=device) * scale).requires_grad_()

    return [
        rand(batch, height, width, dim),
        rand(4, rank + 2 * state, dim, scale=dim**-0.5),
        rand(4, dim, rank, scale=rank**-0.5),
        rand(4, dim, scale=0.5),
        rand(4 * dim, state, scale=0.5),
        rand(4 * dim),
    ]


def ss2d_unfused(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds):
    """The official structure: 4 reordered copies in, per-direction projections, scan, merge out.

    x: (B, D, H, W) channel-first -> (B, D, H, W).
    """
    from msvmunet.ops.cross_scan import cross_merge, cross_scan
    from msvmunet.ops.selective_scan.triton_scan import selective_scan_triton

    batch, dim, height, width = x.shape
    length = height * width
    rank, state = dt_projs_weight.shape[2], A_logs.shape[1]
    xs = cross_scan(x)  # (B, 4, D, L)
    x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, x_proj_weight)
    dts, Bs, Cs = x_dbl.split([rank, state, state], dim=2)
    dts = torch.einsum("bkrl,kdr->bkdl", dts, dt_projs_weight)
    A = -torch.exp(A_logs.float())
    ys = selective_scan_triton(xs.reshape(batch, -1, length), dts.reshape(batch, -1, length), A, Bs, Cs, Ds,
                               dt_projs_bias.reshape(-1), True)
    return cross_merge(ys.view(batch, 4, dim, length), height, width).view(batch, dim, height, width)


def check(name: str, fn, ref_fn, inputs: list[torch.Tensor], failures: list[str], results: dict,
          autocast: bool = False) -> None:
    """Compare fn with ref_fn on the output and on every gradient; record the relative errors."""
    device = inputs[0].device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        y = fn(*inputs)
        ref = ref_fn(*inputs)
    dy = torch.randn_like(ref)
    grads = torch.autograd.grad(y, inputs, dy)
    ref_grads = torch.autograd.grad(ref, inputs, dy)
    errors = {"y": rel_err(y, ref)}
    tols = {"y": TOL_OUT}
    for i, (g, r) in enumerate(zip(grads, ref_grads)):
        errors[f"grad{i}"] = rel_err(g, r)
        tols[f"grad{i}"] = TOL_GRAD[torch.bfloat16 if (autocast or g.dtype == torch.bfloat16) else torch.float32]
    results[name] = errors
    bad = [f"{k}={v:.1e}" for k, v in errors.items() if not (v < tols[k])]
    print(f"  {name:<28} " + " ".join(f"{k}={v:.1e}" for k, v in errors.items()) + ("  FAIL" if bad else "  ok"))
    if bad:
        failures.append(f"{name}: {', '.join(bad)}")


def time_pair(fn, inputs: list[torch.Tensor], autocast: bool = False) -> tuple[float, float]:
    """(forward ms, forward + backward ms) of fn(*inputs)."""
    device = inputs[0].device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        dy = torch.randn_like(fn(*inputs))

    def forward():
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            fn(*inputs)

    def forward_backward():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            y = fn(*inputs)
        torch.autograd.grad(y, inputs, dy)

    return bench(forward, device), bench(forward_backward, device)


def main() -> int:
    args = parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and not args.small:
        print("no CUDA device: run with --small (and TRITON_INTERPRET=1) for a CPU smoke test", file=sys.stderr)
        return 2
    if not cuda:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    device = torch.device("cuda" if cuda else "cpu")

    import triton

    from msvmunet.ops.selective_scan import triton_scan
    from msvmunet.ops.selective_scan.torch_chunked import selective_scan_torch, ss2d_scan_torch

    if args.small:
        scan_shape = dict(batch=1, groups=2, group_dim=5, state=1, length=40)
        ss2d_shape = dict(batch=1, height=5, width=7, dim=6, state=1, rank=2)
    else:
        scan_shape = dict(batch=32, groups=4, group_dim=96, state=1, length=3136)
        ss2d_shape = dict(batch=32, height=56, width=56, dim=96, state=1, rank=6)

    report: dict = {
        "device": torch.cuda.get_device_name() if cuda else "cpu (triton interpreter)",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "scan_shape": scan_shape,
        "ss2d_shape": ss2d_shape,
        "launch": {
            "scan": asdict(triton_scan._launch_config(scan_shape["batch"], scan_shape["state"], scan_shape["length"],
                                                      scan_shape["group_dim"], False)),
            "ss2d": asdict(triton_scan._launch_config(ss2d_shape["batch"], ss2d_shape["state"],
                                                      ss2d_shape["height"] * ss2d_shape["width"], ss2d_shape["dim"],
                                                      True)),
        },
        "errors": {},
        "ms": {},
    }
    print(f"{report['device']}, torch {torch.__version__}, triton {triton.__version__}")
    print(f"selective scan {scan_shape}\nss2d core {ss2d_shape}")

    def to_channel_first(fn):
        return lambda x, *rest: fn(x.permute(0, 3, 1, 2), *rest).permute(0, 2, 3, 1)

    print("correctness (relative error against the torch backend):")
    failures: list[str] = []
    for tag, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        inputs = scan_inputs(scan_shape, dtype, device)
        check(f"selective_scan {tag}", triton_scan.selective_scan_triton, selective_scan_torch, inputs, failures,
              report["errors"])
    ss2d_in = ss2d_inputs(ss2d_shape, device)
    for tag, autocast in (("fp32", False), ("bf16 autocast", True)):
        check(f"ss2d fused {tag}", triton_scan.ss2d_scan_triton, ss2d_scan_torch, ss2d_in, failures,
              report["errors"], autocast)
    check("ss2d unfused fp32", to_channel_first(ss2d_unfused), ss2d_scan_torch, ss2d_in, failures, report["errors"])

    print("timing (median ms):")
    rows = []

    def record(name: str, fn, inputs, autocast: bool = False) -> None:
        fwd, fwd_bwd = time_pair(fn, inputs, autocast)
        report["ms"][name] = {"fwd": fwd, "fwd_bwd": fwd_bwd}
        rows.append((name, fwd, fwd_bwd))
        print(f"  {name:<40} fwd {fwd:8.3f}  fwd+bwd {fwd_bwd:8.3f}", flush=True)

    for tag, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        inputs = scan_inputs(scan_shape, dtype, device)
        record(f"selective_scan triton {tag}", triton_scan.selective_scan_triton, inputs)
        record(f"selective_scan torch {tag}", selective_scan_torch, inputs)
    x_cf = ss2d_in[0].detach().permute(0, 3, 1, 2).contiguous().requires_grad_()
    for tag, autocast in (("fp32", False), ("bf16", True)):
        record(f"ss2d fused triton {tag}", triton_scan.ss2d_scan_triton, ss2d_in, autocast)
        record(f"ss2d unfused triton {tag}", ss2d_unfused, [x_cf, *ss2d_in[1:]], autocast)
    record("ss2d torch fp32", ss2d_scan_torch, ss2d_in)

    if args.sweep and cuda:
        sweep(triton_scan, scan_shape, ss2d_in, device, report, record)

    print("\n| op | fwd ms | fwd+bwd ms |\n| --- | ---: | ---: |")
    for name, fwd, fwd_bwd in rows:
        print(f"| {name} | {fwd:.3f} | {fwd_bwd:.3f} |")
    report["failures"] = failures
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")
    if failures:
        print("CORRECTNESS FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


def sweep(triton_scan, scan_shape, ss2d_in, device, report, record) -> None:
    """Time a few launch configurations (``triton_scan.Tuning`` fields); the first row is the default."""
    scan_configs = [
        {}, dict(prefetch=False), dict(bwd_maxnreg=0), dict(fwd_maxnreg=128), dict(fwd_block_d=4, bwd_block_d=4),
        dict(block_l=64, fwd_block_d=16, bwd_block_d=16), dict(block_l=256, fwd_block_d=4, bwd_block_d=4),
        dict(block_l=256, fwd_block_d=8, bwd_block_d=4, fwd_warps=8),
    ]
    cross_configs = [
        {}, dict(prefetch=False), dict(cross_dirs=4), dict(cross_dirs=2), dict(cross_dirs=1),
        dict(fwd_maxnreg=168), dict(bwd_maxnreg=0), dict(fwd_block_d=4, bwd_block_d=4),
        dict(block_l=256, fwd_warps=8, bwd_warps=8, bwd_maxnreg=0), dict(block_l=64, fwd_block_d=16, bwd_block_d=16),
    ]
    inputs = scan_inputs(scan_shape, torch.float32, device)
    try:
        for cfg in scan_configs:
            triton_scan.tuning = triton_scan.Tuning(**cfg)
            record(f"sweep scan fp32 {cfg or 'default'}", triton_scan.selective_scan_triton, inputs)
        for cfg in cross_configs:
            triton_scan.tuning = triton_scan.Tuning(**cfg)
            record(f"sweep ss2d bf16 {cfg or 'default'}", triton_scan.ss2d_scan_triton, ss2d_in, True)
    finally:
        triton_scan.tuning = triton_scan.Tuning()


if __name__ == "__main__":
    sys.exit(main())
