"""The model's depth-wise convolutions: cuDNN's own backward against the flipped-kernel input gradient.

    python benchmarks/bench_dwconv.py [--model tiny_0230s] [--batch 32] [--size 224] [--out dwconv.json]   # GPU

One forward of the model at batch 1 records every depth-wise convolution it runs (map, channels,
kernel, bias) and how often; each distinct shape is then timed at ``--batch`` in bf16 (channel-last
inputs) as CUDA-graph replays: the forward, and forward + backward (input, weight and bias gradients)
with ``F.conv2d``'s own backward (``flipped_dgrad=False``) and with ``_DepthwiseConv`` (``True``,
the input gradient as a forward convolution with the flipped kernel), after checking that the two
agree. The last line sums over the model's layers (time per shape x layers at that shape).
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import torch

from msvmunet import create_model
from msvmunet.engine.benchmark import capture_graph, time_ms
from msvmunet.models import blocks, layers


def model_shapes(model_name: str, size: int) -> collections.Counter:
    """(H, W, C, K, bias) of every depth-wise convolution in one forward, with its count."""
    seen: collections.Counter = collections.Counter()
    original = blocks.depthwise_conv_nhwc

    def recording(x, weight, bias=None, flipped_dgrad=None):
        seen[(x.shape[1], x.shape[2], x.shape[3], weight.shape[-1], bias is not None)] += 1
        return original(x, weight, bias, flipped_dgrad)

    blocks.depthwise_conv_nhwc = recording
    try:
        model = create_model(model_name, num_classes=9).eval()
        with torch.no_grad():
            model(torch.randn(1, 1, size, size))
    finally:
        blocks.depthwise_conv_nhwc = original
    return seen


def time_shape(batch: int, shape: tuple, device: torch.device) -> dict:
    height, width, channels, kernel, with_bias = shape
    torch.manual_seed(0)
    bf16 = dict(device=device, dtype=torch.bfloat16)
    x = torch.randn(batch, height, width, channels, **bf16, requires_grad=True)
    weight = (torch.randn(channels, 1, kernel, kernel, **bf16) / kernel).requires_grad_(True)
    bias = torch.randn(channels, **bf16, requires_grad=True) if with_bias else None
    inputs = [t for t in (x, weight, bias) if t is not None]
    dy = torch.randn(batch, height, width, channels, **bf16)

    def step(flipped: bool):
        return lambda: torch.autograd.grad(layers.depthwise_conv_nhwc(x, weight, bias, flipped), inputs, dy)

    grads = {flipped: step(flipped)() for flipped in (False, True)}
    for name, a, b in zip(("dx", "dweight", "dbias"), grads[False], grads[True]):
        err = ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()
        if err > 2e-2:
            raise AssertionError(f"{shape}: {name} differs between the two backwards (relative {err:.2e})")

    def forward():
        with torch.no_grad():
            return layers.depthwise_conv_nhwc(x, weight, bias)

    return {"fwd": time_ms(capture_graph(forward, device), device),
            "fwd_bwd_cudnn": time_ms(capture_graph(step(False), device), device),
            "fwd_bwd_flipped": time_ms(capture_graph(step(True), device), device)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny_0230s")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    rows = []
    print(f"{'H x W x C, k, bias':<26}{'layers':>7}{'fwd ms':>9}{'f+b cuDNN':>11}{'f+b flipped':>13}", flush=True)
    for shape, count in sorted(model_shapes(args.model, args.size).items()):
        r = time_shape(args.batch, shape, device)
        rows.append({"shape": list(shape), "layers": count, **r})
        label = f"{shape[0]} x {shape[1]} x {shape[2]}, {shape[3]}, {'yes' if shape[4] else 'no'}"
        print(f"{label:<26}{count:>7}{r['fwd']:>9.3f}{r['fwd_bwd_cudnn']:>11.3f}{r['fwd_bwd_flipped']:>13.3f}",
              flush=True)
    total = {k: sum(r[k] * r["layers"] for r in rows) for k in ("fwd", "fwd_bwd_cudnn", "fwd_bwd_flipped")}
    print(f"{'model (x layers)':<33}{total['fwd']:>9.3f}{total['fwd_bwd_cudnn']:>11.3f}{total['fwd_bwd_flipped']:>13.3f}")
    if args.out:
        args.out.write_text(json.dumps({"batch": args.batch, "size": args.size, "rows": rows, "total": total}, indent=1))


if __name__ == "__main__":
    main()
