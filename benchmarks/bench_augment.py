"""Throughput of the batched paper augmentation (slices per second).

    python benchmarks/bench_augment.py --device cpu --batch 32 --size 224
    python benchmarks/bench_augment.py --device cuda --batch 256 --size 224 --native 512

Each row: median over ``--repeats`` timed calls after ``--warmup`` untimed ones; on CUDA the time
is measured with CUDA events. ``--native N`` adds a row for the faithful order: augment at N x N,
then resize to ``--size`` (image bicubic, label nearest).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from msvmunet.data import AugmentConfig, Augmenter, normalize  # noqa: E402


def time_call(fn, device: torch.device, repeats: int, warmup: int) -> float:
    """Median seconds of ``fn()``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000.0)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--native", type=int, default=None, help="also augment at this size, then resize")
    parser.add_argument("--mode", choices=("faithful", "corrected"), default="faithful")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    rows = []
    for name in args.device:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            print(f"skipping {name}: CUDA is not available")
            continue
        for size_in in [args.size] + ([args.native] if args.native else []):
            config = AugmentConfig(mode=args.mode, out_size=args.size if size_in != args.size else None,
                                   blur_reference_size=None)
            aug = Augmenter(config)
            images = torch.rand(args.batch, 1, size_in, size_in, device=device)
            labels = torch.randint(0, 9, (args.batch, size_in, size_in), device=device)
            generator = torch.Generator(device=device).manual_seed(0)

            def step():
                out, lab = aug(images, labels, generator)
                return normalize(out), lab

            seconds = time_call(step, device, args.repeats, args.warmup)
            label = torch.cuda.get_device_name(device) if device.type == "cuda" else \
                f"cpu ({torch.get_num_threads()} threads)"
            rows.append((label, args.batch, f"{size_in}->{args.size}", seconds * 1000, args.batch / seconds))

    header = ("device", "batch", "size", "ms/batch", "slices/s")
    widths = [max(len(str(r[i])) if i < 3 else 10 for r in rows + [header]) for i in range(5)]
    print(f"augmentation ({args.mode}), median of {args.repeats} after {args.warmup} warm-up, torch {torch.__version__}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for dev, b, size, ms, rate in rows:
        print("  ".join([dev.ljust(widths[0]), str(b).ljust(widths[1]), size.ljust(widths[2]),
                         f"{ms:.2f}".ljust(widths[3]), f"{rate:,.0f}".ljust(widths[4])]))


if __name__ == "__main__":
    main()
