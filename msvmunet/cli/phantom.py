"""``msvmunet phantom``: write the synthetic CT data set."""

from __future__ import annotations

import argparse

COMMAND = "phantom"
HELP = "write a synthetic abdominal CT data set (Synapse layout, optionally nnU-Net NIfTI)"
DESCRIPTION = (
    "Write a deterministic synthetic CT data set with the 8 Synapse organs: train_npz slices, "
    "test_vol_h5 volumes and list files, like `prepare synapse` makes; --nnunet also writes "
    "OUTPUT/nnunet in the nnU-Net raw layout (imagesTr/labelsTr, imagesTs/labelsTs). Use it to try "
    "the whole pipeline without real data; --size 512 --slices 123 --cases 30 is Synapse-sized. "
    "The files are the same whatever --workers."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", "--out", dest="output", required=True, help="output folder")
    parser.add_argument("--cases", type=int, default=12, help="number of volumes")
    parser.add_argument("--test-cases", type=int, default=None, help="how many of them are test volumes "
                        "(default: a third)")
    parser.add_argument("--size", type=int, default=128, help="in-plane size H = W")
    parser.add_argument("--slices", type=int, default=48, help="slices per volume")
    parser.add_argument("--seed", type=int, default=0, help="random seed: the same seed writes the same phantom")
    parser.add_argument("--nnunet", action="store_true", help="also write the nnU-Net raw layout")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes, one case each (default: one per core this process may use)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..data.phantom import make_phantom

    summary = make_phantom(args.output, cases=args.cases, test_cases=args.test_cases, seed=args.seed,
                           size=args.size, slices=args.slices, nnunet=args.nnunet, workers=args.workers,
                           progress=not args.no_progress)
    print(summary.format())
    return 0
