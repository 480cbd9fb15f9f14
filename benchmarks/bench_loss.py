"""The training loss, forward + backward, at the model's output shape: the fused Triton kernels against the
torch ops (eager and compiled), after checking that they agree.

    python benchmarks/bench_loss.py [--batch 32] [--size 224] [--classes 9]   # GPU

Logits in bf16, channel-last (as the model returns them under autocast), targets int64; each variant
captured in a CUDA graph and its replays timed (median).
"""

from __future__ import annotations

import argparse

import torch

from msvmunet.engine.benchmark import capture_graph, time_ms
from msvmunet.engine.losses import DiceCELoss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--classes", type=int, default=9)
    args = p.parse_args()
    device = torch.device("cuda")
    torch.manual_seed(0)
    shape = (args.batch, args.classes, args.size, args.size)
    logits = (torch.randn(shape, device=device) * 3).bfloat16().to(memory_format=torch.channels_last)
    logits.requires_grad_(True)
    target = torch.randint(0, args.classes, (args.batch, args.size, args.size), device=device)
    variants = {"fused": DiceCELoss(fused=True), "torch eager": DiceCELoss(fused=False),
                "torch compiled": torch.compile(DiceCELoss(fused=False))}

    def step(criterion):
        return lambda: torch.autograd.grad(criterion(logits, target), logits)

    results = {name: step(c)() for name, c in variants.items()}
    ref = results["torch eager"][0].float()
    for name, (grad,) in results.items():
        err = ((grad.float() - ref).norm() / ref.norm()).item()
        if err > 1e-2:
            raise AssertionError(f"{name}: gradient differs from the torch ops' (relative {err:.2e})")
    print(f"loss forward + backward, logits {tuple(shape)} bf16 channel-last:")
    for name, criterion in variants.items():
        print(f"  {name:<16} {time_ms(capture_graph(step(criterion), device), device):8.3f} ms", flush=True)


if __name__ == "__main__":
    main()
