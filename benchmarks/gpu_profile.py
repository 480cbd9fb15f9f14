"""Where the time of a training step (or inference) goes on a GPU: top kernels and launch count.

    python benchmarks/gpu_profile.py --batch 32 --backend triton [--mode infer] [--out prof.txt]
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from msvmunet import create_model
from msvmunet.cli.benchmark import set_scan_tuning
from msvmunet.engine.inference import autocast_context
from msvmunet.engine.losses import DiceCELoss


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
    p.add_argument("--scan-tuning", nargs="+", default=[], metavar="FIELD=VALUE",
                   help="Triton scan launch parameters, as for `msvmunet benchmark --scan-tuning`")
    p.add_argument("--out", default=None)
    args = p.parse_args()

    if args.scan_tuning:
        set_scan_tuning(args.scan_tuning)
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    model = create_model(args.model, num_classes=9, scan_backend=args.backend).to(dev)
    x = torch.rand(args.batch, 1, args.size, args.size, device=dev) * 2 - 1
    y = torch.randint(0, 9, (args.batch, args.size, args.size), device=dev)
    net = torch.compile(model) if args.compile else model
    crit = torch.compile(DiceCELoss()) if args.compile else DiceCELoss()  # as the benchmark and trainer do
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step():
        if args.mode == "train":
            model.train()
            with autocast_context(dev, args.precision):
                out = net(x)
            loss = crit(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        else:
            model.eval()
            with torch.inference_mode(), autocast_context(dev, args.precision):
                net(x)

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        for _ in range(args.steps):
            step()
        torch.cuda.synchronize()
    events = prof.key_averages()
    kernels = sum(e.count for e in prof.events() if e.device_type.name == "CUDA") / args.steps
    total = sum(e.self_device_time_total for e in events) / args.steps / 1e3
    table = events.table(sort_by="self_device_time_total", row_limit=args.rows, max_name_column_width=70)
    scans = [e for e in prof.key_averages(group_by_input_shape=True) if e.key.startswith("msvmunet::")]
    scan_rows = "\n".join(f"{e.key:<20} {e.count // args.steps:3d} calls/step  {e.device_time_total / args.steps / 1e3:8.3f} ms/step"
                          f"  {str(e.input_shapes)[:90]}" for e in sorted(scans, key=lambda e: -e.device_time_total))
    text = (f"{args.mode}, batch {args.batch}, backend {args.backend}, compile {args.compile}: {kernels:.0f} kernels "
            f"per step, {total:.2f} ms device time per step\n{table}\nscan ops by shape:\n{scan_rows}\n")
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
