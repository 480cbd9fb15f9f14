"""``msvmunet check-data DIR``: validate a dataset folder before training."""

from __future__ import annotations

import argparse

COMMAND = "check-data"
HELP = "validate a dataset folder (Synapse, ACDC, nnU-Net, SSL4MIS ACDC, 2-D images) and print class histograms"
DESCRIPTION = (
    "Read every file of every split and report all problems at once: unreadable or truncated "
    "files, list entries without a file, empty lists, image/label shape mismatches, NaN/inf "
    "images, labels outside 0..C-1. Exit status 1 when a problem was found."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="dataset folder")
    parser.add_argument("--kind", choices=("synapse", "acdc", "nifti", "nnunet", "ssl4mis", "images"), default=None,
                        help="dataset layout; nnunet (the nnU-Net raw layout) is nifti (default: detected)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..data.check import check_dataset

    report = check_dataset(args.root, args.kind, progress=not args.no_progress)
    print(report.format())
    return 0 if report.ok else 1
