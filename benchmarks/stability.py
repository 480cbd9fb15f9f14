"""Training stability of the Triton path: N bf16 training steps of tiny_0230s on the phantom with the
``triton`` and ``torch`` scan backends, same data, same seed; prints loss windows and checks for NaN/inf.

    python benchmarks/stability.py --steps 200 --out stability.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from msvmunet import create_model  # noqa: E402
from msvmunet.data import Augmenter, AugmentConfig, make_phantom, normalize, open_dataset  # noqa: E402
from msvmunet.engine.losses import DiceCELoss  # noqa: E402
from msvmunet.engine.step import StepRunner  # noqa: E402


def run(backend: str, data: Path, steps: int, batch: int, size: int, device: torch.device, seed: int,
        model_name: str) -> list[float]:
    torch.manual_seed(seed)
    model = create_model(model_name, num_classes=9, scan_backend=backend).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=1e-3, fused=device.type == "cuda")
    runner = StepRunner(model, DiceCELoss(), optimizer, None, device, "bf16", use_graph=False)
    dataset = open_dataset(data).slices("train", size=size)
    augment = Augmenter(AugmentConfig())
    losses: list[float] = []
    epoch = 0
    while len(losses) < steps:
        loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True, num_workers=4,
                            generator=torch.Generator().manual_seed(seed + epoch))
        for i, item in enumerate(loader):
            images, labels = item["image"].to(device), item["label"].to(device)
            images, labels = augment(images, labels, generator=torch.Generator(device=device).manual_seed(i + 1000 * epoch))
            losses.append(runner(normalize(images), labels).item())
            if len(losses) == steps:
                break
        epoch += 1
    return losses


def windows(losses: list[float], width: int = 20) -> list[float]:
    return [sum(losses[i:i + width]) / len(losses[i:i + width]) for i in range(0, len(losses), width)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="tiny_0230s")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--backends", nargs=2, default=["triton", "torch"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        make_phantom(tmp, seed=args.seed)
        curves = {b: run(b, Path(tmp), args.steps, args.batch, args.size, device, args.seed, args.model)
                  for b in args.backends}
    finite = {b: all(math.isfinite(v) for v in c) for b, c in curves.items()}
    win = {b: windows(c) for b, c in curves.items()}
    print(f"{args.steps} bf16 steps of {args.model}, batch {args.batch}, {args.size}^2, phantom, paper augmentations")
    print("window     " + "  ".join(f"{b:>8}" for b in win))
    first, second = args.backends
    for i in range(len(win[first])):
        print(f"{i * 20 + 1:>4}-{min((i + 1) * 20, args.steps):<4}" + "  ".join(f"{win[b][i]:8.4f}" for b in win))
    gap = max(abs(x - y) for x, y in zip(win[first], win[second]))
    print(f"finite: {finite}; largest gap between the windowed curves: {gap:.4f}")
    if args.out:
        args.out.write_text(json.dumps({"curves": curves, "windows": win, "finite": finite, "gap": gap}))
    if not all(finite.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
