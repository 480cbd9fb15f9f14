"""msvmunet benchmark: ms, images/s and peak memory of training and inference."""

from __future__ import annotations

import argparse
import json
import platform

COMMAND = "benchmark"
HELP = "time training end to end over real files (--data), or the training step and inference alone"
DESCRIPTION = (
    "With --data DIR: time the real training run over the dataset's files, as `msvmunet train` runs it "
    "(reading, resizing, augmenting, the step, logging, checkpoints), epochs with the encoder frozen then "
    "training, and print per epoch the images/s and the seconds of each phase (data wait, augmentation, step, "
    "validation, checkpoint). Without --data: time a full training step (forward, 0.4 CE + 0.6 Dice loss, "
    "backward, AdamW) and inference on random data, median of repeats after warm-up (CUDA events on a GPU)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="model name (see msvmunet.list_models(); default: tiny_0230s, or the preset's with --data)")
    parser.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    parser.add_argument("--batch", type=int, nargs="+", default=[32], help="batch size(s)")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--classes", type=int, default=9, help="number of classes")
    parser.add_argument("--precision", choices=("bf16", "fp16", "fp32"), default=None,
                        help="autocast dtype (default: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--backend", default="auto", help="scan backend: auto, triton, torch, reference")
    parser.add_argument("--mode", choices=("train", "infer", "both"), default="both",
                        help="time the training step, inference, or both")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="wrap the model in torch.compile (default: off; with --data, the recipe's: on for CUDA)")
    parser.add_argument("--compile-mode", default=None,
                        help="torch.compile mode, e.g. max-autotune-no-cudagraphs or reduce-overhead")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="capture the whole step (training: forward, loss, backward, AdamW) in a CUDA graph")
    parser.add_argument("--scan-tuning", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="launch parameters of the Triton scan (msvmunet.ops.selective_scan.triton_scan.Tuning), "
                             "e.g. per_thread=0 (tiled kernels) or chunks=4 block_l=8")
    parser.add_argument("--inductor", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="with --compile: inductor settings (fields of torch._inductor.config), e.g. "
                             "combo_kernels=1 or coordinate_descent_tuning=1; not with --compile-mode")
    end = parser.add_argument_group("end to end (with --data)")
    end.add_argument("--data", default=None, metavar="DIR",
                     help="time `msvmunet train` over this dataset (e.g. `msvmunet phantom --size 512 --slices 123`)")
    end.add_argument("--preset", default="synapse", help="training recipe (msvmunet train --preset)")
    end.add_argument("--frozen-epochs", type=int, default=2, help="epochs with the encoder frozen")
    end.add_argument("--train-epochs", type=int, default=3, help="epochs training the encoder")
    end.add_argument("--num-workers", type=int, default=None, help="data-loading workers (default: the recipe's)")
    end.add_argument("--steps-per-epoch", type=int, default=None, help="cap on steps per epoch")
    end.add_argument("-o", "--output", "--out", default=None, help="keep the run folder here (default: a temporary folder)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs first (compilation, autotuning, caches)")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs; the median is reported")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..engine.benchmark import benchmark, results_dict
    from ..engine.compiling import parse_inductor_items

    if args.scan_tuning:
        set_scan_tuning(args.scan_tuning)
    options = parse_inductor_items(args.inductor) if args.inductor else None
    compiling = args.compile is not False if args.data is not None else bool(args.compile)
    if options and (not compiling or args.compile_mode):
        from ..errors import ConfigError

        raise ConfigError("--inductor takes effect with --compile and without --compile-mode (torch.compile takes "
                          "either a mode or options)")
    if args.data is not None:
        return run_end_to_end(args, options)
    args.model = args.model or "tiny_0230s"
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    precision = args.precision or ("bf16" if device.startswith("cuda") else "fp32")
    modes = ("train", "infer") if args.mode == "both" else (args.mode,)
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else platform.processor() or platform.machine()
    print(f"{args.model}, {args.size}x{args.size}, {args.classes} classes, {precision}, backend {args.backend}, "
          f"{name}, torch {torch.__version__}")
    rows = []
    for batch in args.batch:
        for r in benchmark(args.model, device=device, batch=batch, size=args.size, num_classes=args.classes,
                           precision=precision, backend=args.backend, modes=modes, compile=args.compile,
                           compile_mode=args.compile_mode, compile_options=options, cuda_graph=args.cuda_graph, warmup=args.warmup, repeats=args.repeats):
            print(r.row())
            rows.append(r)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "precision": precision, "backend": args.backend, "model": args.model,
                       "size": args.size, "inductor": options or {}, "results": results_dict(rows)}, f, indent=1)
    return 0


def run_end_to_end(args: argparse.Namespace, inductor: dict | None) -> int:
    """``benchmark --data``: the training run timed per epoch and phase."""
    from ..engine.benchmark import benchmark_training, training_table

    overrides = dict(device=args.device, num_workers=args.num_workers, steps_per_epoch=args.steps_per_epoch,
                     batch_size=args.batch[0] if args.batch != [32] else None, model=args.model,
                     compile=args.compile, scan_backend=args.backend, image_size=args.size,
                     precision=args.precision, inductor=inductor)
    rows = benchmark_training(args.data, output=args.output, frozen_epochs=args.frozen_epochs,
                              train_epochs=args.train_epochs, preset=args.preset, **overrides)
    print()
    print(training_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"data": str(args.data), "preset": args.preset, "epochs": rows}, f, indent=1)
    return 0


def set_scan_tuning(items: list[str]) -> None:
    """Set the Triton scan's launch parameters from ``FIELD=VALUE`` strings (fields of ``triton_scan.Tuning``)."""
    import dataclasses

    from ..errors import ConfigError
    from ..ops.selective_scan import triton_scan

    fields = {f.name: f for f in dataclasses.fields(triton_scan.Tuning)}
    values = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in fields or not value:
            raise ConfigError(f"--scan-tuning {item!r}: expected FIELD=VALUE with FIELD one of {sorted(fields)}")
        if "bool" in str(fields[key].type):
            if value.lower() not in ("0", "1", "true", "false", "yes", "no"):
                raise ConfigError(f"--scan-tuning {item!r}: {key} takes 1 or 0")
            values[key] = value.lower() in ("1", "true", "yes")
        elif value.isdigit():
            values[key] = int(value)
        else:
            raise ConfigError(f"--scan-tuning {item!r}: {key} takes a whole number")
    triton_scan.tuning = triton_scan.Tuning(**values)
    print(f"scan tuning: {triton_scan.tuning}")
