"""Launch configurations of the fused SS2D core, timed at the four stage shapes of tiny_0230s.

    python benchmarks/sweep_core.py [--out sweep.json] [--batch 32] [--family all|per-thread|tiled] [--chunks]  # GPU

For every configuration (``triton_scan.Tuning``: the one-channel-per-thread kernels' steps per block,
chunks, pipelining stages and output-slot precision; the tiled kernels' warps, steps per block, channels
per program, directions per program) the forward and backward kernels are timed on the inputs the model gives
them at batch 32, 224^2, bf16 autocast: (H, D) = (56, 96), (28, 192), (14, 384), (7, 768). The
table lists ms per call and the per-step total weighted by the number of SS2D layers at each shape.
Each call of the custom op (the kernels; the sums of its output slots and partial sums are left to
the autograd Function, where torch.compile fuses them) is captured in a CUDA graph and the replays
are timed with CUDA events, so the host's launch overhead is left out (as in the compiled,
graph-captured training step); ``--eager`` times eager calls instead (host overhead included, as
earlier versions of this script did).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch

from msvmunet.engine.benchmark import capture_graph, time_ms
from msvmunet.ops.selective_scan import triton_scan
from msvmunet.ops.selective_scan.torch_chunked import ss2d_projections

# (side, channels): SS2D layers at that shape in tiny_0230s (encoder 2-2-8-2, decoder 2-2-2)
SHAPES = {(56, 96): 4, (28, 192): 4, (14, 384): 10, (7, 768): 2}


def core_inputs(batch: int, side: int, dim: int, device: torch.device) -> dict:
    torch.manual_seed(side)
    rank = -(-dim // 16)
    x = torch.randn(batch, side, side, dim, device=device)
    xw = torch.randn(4, rank + 2, dim, device=device) / dim**0.5
    dtw = torch.randn(4, dim, rank, device=device) / rank**0.5
    bias = torch.log(torch.expm1(torch.rand(4 * dim, device=device) * 0.1 + 1e-3))
    with torch.autocast(device.type, dtype=torch.bfloat16):
        flat, dts, Bs, Cs = ss2d_projections(x.bfloat16(), xw, dtw)
    A = -torch.rand(4 * dim, 1, device=device) - 0.5
    Ds = torch.ones(4 * dim, device=device)
    return dict(u=flat, delta=dts.contiguous(), A=A, B=Bs, C=Cs, D=Ds, bias=bias, height=side, width=side,
                dy=torch.randn(batch, side * side, dim, device=device, dtype=torch.bfloat16))  # as y under autocast


def time_config(cfg: dict, data: dict, eager: bool = False) -> dict:
    triton_scan.tuning = triton_scan.Tuning(**cfg)
    out = {}
    for shape, d in data.items():
        batch, length, dim = d["u"].shape
        plan = triton_scan.launch_plan(batch, 1, length, dim, True)
        args = (d["u"], d["delta"], d["A"], d["B"], d["C"], d["D"], d["bias"], True, d["height"], d["width"], True, plan)
        device = d["u"].device
        try:
            y, carry = triton_scan.scan_fwd(*args)
            fwd_call = lambda: triton_scan.scan_fwd(*args)  # noqa: E731
            bwd_call = lambda: triton_scan.scan_bwd(d["dy"], *args[:7], carry, *args[7:])  # noqa: E731
            fwd = time_ms(fwd_call if eager else capture_graph(fwd_call, device), device)
            bwd = time_ms(bwd_call if eager else capture_graph(bwd_call, device), device)
        except Exception as err:  # a configuration the compiler rejects (e.g. out of resources)
            out[shape] = {"error": str(err)[:200]}
            continue
        out[shape] = {"fwd": fwd, "bwd": bwd}
    triton_scan.tuning = triton_scan.Tuning()
    return out


def weighted(res: dict, key: str) -> float:
    return sum(SHAPES[s] * res[s][key] for s in SHAPES if key in res.get(s, {}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--out", type=Path)
    p.add_argument("--family", choices=("all", "per-thread", "tiled"), default="all",
                   help="the one-channel-per-thread kernels, the tiled ones, or both (the defaults are always timed)")
    p.add_argument("--eager", action="store_true", help="time eager calls (host overhead included), not graph replays")
    p.add_argument("--chunks", action="store_true",
                   help="only the per-thread kernels' chunk counts 2-24, powers of two or not (the same count at every "
                        "shape; forward and backward are timed apart, so each pass's best count per shape shows)")
    args = p.parse_args()
    device = torch.device("cuda")
    data = {s: core_inputs(args.batch, s[0], s[1], device) for s in SHAPES}
    configs = [{}, {"per_thread": False}]
    lanes = args.family in ("all", "per-thread") and not args.chunks
    counts = (2, 3, 4, 5, 6, 7, 8, 10, 12, 13, 14, 16, 20, 24) if args.chunks else ()
    configs += [dict(chunks=chunks) for chunks in counts]
    # 16 steps per block spill in the backward and 1 chunk is slow (BENCHMARKS.md): not swept again
    for block_l, chunks in itertools.product((4, 8) if lanes else (), (2, 4, 8, 16)):
        configs.append(dict(block_l=block_l, chunks=chunks))
    for chunks, stages in itertools.product((4, 8, 16) if lanes else (), (2, 3)):  # pipelined block loops
        configs.append(dict(chunks=chunks, stages=stages))
    for stages in (1, 2, 3) if lanes else ():  # fp32 output slots (y, du; bf16 by default under bf16 inputs)
        configs.append(dict(narrow_slots=False, stages=stages))
    for warps in (2, 4) if lanes else ():  # more channels per program
        configs.append(dict(fwd_block_d=32 * warps, bwd_block_d=32 * warps, fwd_warps=warps, bwd_warps=warps))
    tiled = args.family in ("all", "tiled") and not args.chunks
    for warps, block_l, block_d in itertools.product((1, 2, 4) if tiled else (), (16, 32, 64, 128), (8, 16, 32)):
        per_thread = block_l * block_d / (32 * warps)
        if 2 <= per_thread <= 32:
            configs.append(dict(per_thread=False, fwd_warps=warps, bwd_warps=warps, block_l=block_l,
                                fwd_block_d=block_d, bwd_block_d=block_d))
    rows = []
    for cfg in configs:
        res = time_config(cfg, data, args.eager)
        rows.append((cfg, res))
        cells = "  ".join(f"{s[0]:>2}: {r['fwd']:.3f}/{r['bwd']:.3f}" if "fwd" in r else f"{s[0]:>2}: error"
                          for s, r in res.items())
        print(f"{str(cfg or 'default'):<95} fwd {weighted(res, 'fwd'):6.2f} bwd {weighted(res, 'bwd'):6.2f} | {cells}",
              flush=True)
    if not tiled:  # the variants below are the tiled kernels' knobs
        variants = ()
    else:
        variants = ({"cross_dirs": 1}, {"cross_dirs": 2}, {"cross_dirs": 4}, {"bwd_maxnreg": 0}, {"bwd_maxnreg": 128},
                    {"fwd_warps": 2, "bwd_warps": 2})
    # per shape: the best forward and backward configuration, then its directions per program and register cap
    best = {}
    for s in SHAPES:
        for key in ("fwd", "bwd"):
            ok = [(r[s][key], c) for c, r in rows if key in r[s]]
            best[(s, key)] = min(ok, key=lambda t: t[0])
    print("\nper shape, best (ms, config), then cross_dirs / register-cap variants of it:")
    extra = []
    for (s, key), (ms, cfg) in best.items():
        print(f"{s} {key}: {ms:.3f} ms  {cfg or 'default'}")
        for variant in variants:
            vcfg = {**cfg, **variant}
            r = time_config(vcfg, {s: data[s]}, args.eager)[s]
            extra.append((s, key, vcfg, r))
            print(f"    {variant}: " + (f"fwd {r['fwd']:.3f} bwd {r['bwd']:.3f}" if "fwd" in r else r["error"]), flush=True)
    if args.out:
        args.out.write_text(json.dumps({
            "rows": [{"config": c, "results": {f"{s[0]}x{s[1]}": r for s, r in res.items()}} for c, res in rows],
            "variants": [{"shape": f"{s[0]}x{s[1]}", "kind": k, "config": c, "result": r} for s, k, c, r in extra],
        }, indent=1))


if __name__ == "__main__":
    main()
