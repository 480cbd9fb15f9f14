"""msvmunet evaluate: metrics of a checkpoint on a dataset, under the paper's and the strict protocol."""

from __future__ import annotations

import argparse

COMMAND = "evaluate"
HELP = "evaluate a checkpoint on a dataset's test volumes (paper and strict protocols, reports, pictures)"
DESCRIPTION = (
    "Segment each volume slice by slice (resized to the network size with cubic interpolation, arg-max, "
    "resized back with nearest neighbour, as the official code) and measure Dice, HD95, Jaccard and ASD per "
    "case and class. 'paper' reproduces the published protocol (voxel units, empty-prediction rules); "
    "'strict' measures in mm and leaves undefined cases out as NaN, counted. Writes <output>/<protocol>/"
    "{cases.csv, summary.md, summary.json, dice_boxplot.png} and <output>/overlays/."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="msvmunet checkpoint (final.pt, best.pt, or converted)")
    parser.add_argument("--data", required=True, help="dataset root folder")
    parser.add_argument("--split", default="test", help="which split's volumes to evaluate")
    parser.add_argument("--cases", default=None, help="comma-separated case names (default: all of the split)")
    parser.add_argument("--protocol", choices=("paper", "strict", "both"), default="both",
                        help="paper: the published protocol (voxel units, empty-prediction rules); strict: in mm, "
                             "undefined cases left out and counted; both: two reports")
    parser.add_argument("-o", "--output", "--out", default="runs/evaluation", help="folder for the reports")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp16", "fp32"),
                        help="autocast dtype; auto: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--batch-size", type=int, default=32, help="slices per forward pass")
    parser.add_argument("--overlays", type=int, default=3, help="write overlay PNGs for this many cases")
    parser.add_argument("--no-boxplot", action="store_true", help="skip the Dice box plot")
    parser.add_argument("--backend", default="auto", help="selective-scan backend: auto, triton, torch")


def run(args: argparse.Namespace) -> int:
    from ..engine.evaluate import evaluate

    protocols = ("paper", "strict") if args.protocol == "both" else (args.protocol,)
    cases = [c for c in args.cases.split(",") if c] if args.cases else None
    evaluate(args.checkpoint, args.data, output=args.output, split=args.split, cases=cases, protocols=protocols,
             device=args.device, precision=args.precision, batch_size=args.batch_size, overlays=args.overlays,
             boxplot=not args.no_boxplot, backend=args.backend)
    print(f"reports in {args.output}")
    return 0
