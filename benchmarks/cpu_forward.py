"""CPU inference speed of MSVM-UNet on one slice, against the machine's own matmul rate.

    python benchmarks/cpu_forward.py --model tiny_0230s --size 224

Prints the model's median forward time, a 1024^3 float32 matmul's median time (calibration,
same run), the model's matmul/conv FLOPs and the ratio of the model time to its "matmul floor"
(model FLOPs at the calibrated rate).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from msvmunet import create_model


def median_time(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny_0230s")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--classes", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = create_model(args.model, num_classes=args.classes).eval()
    x = torch.randn(args.batch, args.channels, args.size, args.size)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            model(x)
        flops = counter.get_total_flops()
        t_model = median_time(lambda: model(x), args.repeats)

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    t_mm = median_time(lambda: a @ b, max(args.repeats, 20))
    rate = 2 * 1024**3 / t_mm
    floor = flops / rate
    print(f"machine       : {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"model         : {args.model}, input {args.batch}x{args.channels}x{args.size}x{args.size}, float32, eval")
    print(f"model FLOPs   : {flops / 1e9:.2f} GFLOP (matmul/conv, counted)")
    print(f"model time    : {t_model * 1e3:.1f} ms (median of {args.repeats})")
    print(f"matmul 1024^3 : {t_mm * 1e3:.2f} ms = {rate / 1e9:.0f} GFLOP/s")
    print(f"matmul floor  : {floor * 1e3:.1f} ms; model / floor = {t_model / floor:.2f}x")


if __name__ == "__main__":
    main()
