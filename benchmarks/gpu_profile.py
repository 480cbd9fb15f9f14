"""Where the time of a training step (or inference) goes on a GPU: top kernels, launch count, and
how much of the step the GPU sits between kernels.

    python benchmarks/gpu_profile.py --batch 32 --backend triton [--mode infer] [--out prof.txt]
    python benchmarks/gpu_profile.py --compile --cuda-graph [--inductor combo_kernels=1] [--trace step.json.gz]

The summary line gives the step time (median of 20 unprofiled steps, as `msvmunet benchmark` times
it) and peak memory, then counts device activities (kernels, copies, memsets) per step, their summed
duration ("busy"), the span from the first start to the last end divided by the steps ("span"),
and the idle time between consecutive activities ("idle" = the gaps, which with a CUDA graph are
the per-kernel launch latency and the ramp of each kernel), with a histogram of kernel durations.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from msvmunet import create_model
from msvmunet.cli.benchmark import set_scan_tuning
from msvmunet.engine.benchmark import make_step, time_ms
from msvmunet.engine.compiling import parse_inductor_items


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="tiny_0230s")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--backend", default="auto")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--mode", choices=("train", "infer"), default="train")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rows", type=int, default=40)
    p.add_argument("--compile", action="store_true", help="profile torch.compile(model) (and of the loss)")
    p.add_argument("--cuda-graph", action="store_true",
                   help="profile replays of the whole step captured in a CUDA graph (as `msvmunet benchmark --cuda-graph`)")
    p.add_argument("--scan-tuning", nargs="+", default=[], metavar="FIELD=VALUE",
                   help="Triton scan launch parameters, as for `msvmunet benchmark --scan-tuning`")
    p.add_argument("--inductor", nargs="+", default=[], metavar="FIELD=VALUE",
                   help="inductor settings with --compile, as for `msvmunet benchmark --inductor`")
    p.add_argument("--trace", default=None, help="also write a Chrome trace of the profiled steps (.json or .json.gz)")
    p.add_argument("--out", default=None)
    args = p.parse_args()

    if args.scan_tuning:
        set_scan_tuning(args.scan_tuning)
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    model = create_model(args.model, num_classes=9, scan_backend=args.backend).to(dev)
    x = torch.rand(args.batch, 1, args.size, args.size, device=dev) * 2 - 1
    y = torch.randint(0, 9, (args.batch, args.size, args.size), device=dev)
    options = parse_inductor_items(args.inductor) or None
    torch.cuda.reset_peak_memory_stats(dev)
    step = make_step(model, args.mode, x, y, args.precision, compile=args.compile, compile_options=options,
                     cuda_graph=args.cuda_graph)  # the step `msvmunet benchmark` times
    step_ms = time_ms(step, dev, warmup=5, repeats=20)  # median, as `msvmunet benchmark` times it
    peak = torch.cuda.max_memory_allocated(dev) / 2**30
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        for _ in range(args.steps):
            step()
        torch.cuda.synchronize()
    events = prof.key_averages()
    timeline = device_timeline(prof, args.steps)
    if args.trace:
        prof.export_chrome_trace(args.trace)
    table = events.table(sort_by="self_device_time_total", row_limit=args.rows, max_name_column_width=70)
    scans = [e for e in prof.key_averages(group_by_input_shape=True) if e.key.startswith("msvmunet::")]
    scan_rows = "\n".join(f"{e.key:<20} {e.count // args.steps:3d} calls/step  {e.device_time_total / args.steps / 1e3:8.3f} ms/step"
                          f"  {str(e.input_shapes)[:90]}" for e in sorted(scans, key=lambda e: -e.device_time_total))
    text = (f"{args.mode}, batch {args.batch}, backend {args.backend}, compile {args.compile}, "
            f"CUDA graph {args.cuda_graph}, inductor {options or {}}: step {step_ms:.2f} ms (median of 20, unprofiled), "
            f"peak {peak:.2f} GiB; {timeline}\n{table}\nscan ops by shape:\n{scan_rows}\n")
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


def device_timeline(prof, steps: int) -> str:
    """Per step: device activities, their summed duration, the span they cover, the gaps between
    them, and how many kernels fall into each duration bin."""
    spans = sorted((e.time_range.start, e.time_range.end) for e in prof.events() if e.device_type.name == "CUDA")
    if not spans:
        return "no device activity recorded"
    busy = sum(end - start for start, end in spans)
    idle, last = 0.0, spans[0][1]
    for start, end in spans[1:]:
        idle += max(0.0, start - last)
        last = max(last, end)
    bins = [(0, 5), (5, 10), (10, 20), (20, 50), (50, 100), (100, float("inf"))]
    hist = ", ".join(f"{lo}-{hi if hi != float('inf') else ''} us: {sum(lo <= e - s < hi for s, e in spans) / steps:.0f}"
                     for lo, hi in bins)
    span = last - spans[0][0]  # to the latest end (the last to start need not end last)
    return (f"{len(spans) / steps:.0f} device activities per step, busy {busy / steps / 1e3:.2f} ms, "
            f"span {span / steps / 1e3:.2f} ms, idle between them {idle / steps / 1e3:.2f} ms per step; "
            f"durations per step: {hist}")


if __name__ == "__main__":
    main()
