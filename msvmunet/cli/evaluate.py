"""msvmunet evaluate: metrics of a checkpoint on a dataset, under the paper's and the strict protocol."""

from __future__ import annotations

import argparse

from ._inference import add_inference_arguments, inference_options

COMMAND = "evaluate"
HELP = "evaluate a checkpoint on a dataset's test volumes (paper and strict protocols, reports, pictures)"
DESCRIPTION = (
    "Segment each volume slice by slice (resized to the network size with cubic interpolation, arg-max, "
    "resized back with nearest neighbour, as the official code) and measure Dice, HD95, Jaccard and ASD per "
    "case and class. 'paper' reproduces the published protocol (voxel units, empty-prediction rules); "
    "'strict' measures in mm and leaves undefined cases out as NaN, counted. Writes <output>/<protocol>/"
    "{cases.csv, summary.md, summary.json, dice_boxplot.png} and <output>/overlays/; with --keep-largest "
    "also <output>/<protocol>_keep_largest/ (the same predictions post-processed)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="dataset root folder")
    parser.add_argument("--split", default="test", help="which split's volumes to evaluate")
    parser.add_argument("--cases", default=None, help="comma-separated case names (default: all of the split)")
    parser.add_argument("--protocol", choices=("paper", "strict", "both"), default="both",
                        help="paper: the published protocol (voxel units, empty-prediction rules); strict: in mm, "
                             "undefined cases left out and counted; both: two reports")
    parser.add_argument("-o", "--output", "--out", default="runs/evaluation", help="folder for the reports")
    parser.add_argument("--overlays", type=int, default=3, help="write overlay PNGs for this many cases")
    parser.add_argument("--no-boxplot", action="store_true", help="skip the Dice box plot")
    add_inference_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..engine.evaluate import evaluate

    protocols = ("paper", "strict") if args.protocol == "both" else (args.protocol,)
    cases = [c for c in args.cases.split(",") if c] if args.cases else None
    evaluate(args.checkpoint, args.data, output=args.output, split=args.split, cases=cases, protocols=protocols,
             overlays=args.overlays, boxplot=not args.no_boxplot, **inference_options(args))
    print(f"reports in {args.output}")
    return 0
