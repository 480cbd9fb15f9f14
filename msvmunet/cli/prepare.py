"""``msvmunet prepare {synapse,acdc}``: raw scans -> the layouts the readers take."""

from __future__ import annotations

import argparse
import warnings

COMMAND = "prepare"
HELP = "prepare Synapse (from BTCV) or ACDC from the raw NIfTI scans"
DESCRIPTION = (
    "Convert raw scans into the layouts used for training and evaluation. Idempotent: finished "
    "cases are skipped, files are written atomically; synapse skips only cases it wrote itself from "
    "the same raw files (OUTPUT/prepare_manifest.json) and refuses other files of the same names. "
    "synapse: --raw is BTCV's RawData/Training (img/, label/); HU window [-125, 275] -> [0, 1], "
    "8 organs, TransUNet's 18/12 split. acdc: --raw holds patientXXX folders; per-volume "
    "percentile normalisation, 70/10/20 patient split."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    for name, help_text in (("synapse", "BTCV abdomen CT -> Synapse (train_npz, test_vol_h5)"),
                            ("acdc", "ACDC cine MR -> train/valid/test npz")):
        p = sub.add_parser(name, help=help_text, formatter_class=parser.formatter_class)
        p.add_argument("--raw", required=True, help="folder of the raw NIfTI files")
        p.add_argument("-o", "--output", "--out", dest="output", required=True, help="output dataset folder")
        p.add_argument("--overwrite", action="store_true",
                       help="redo cases whose outputs exist, and replace files this prepare did not write")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        if name == "acdc":
            p.add_argument("--seed", type=int, default=0, help="seed of the patient split")


def run(args: argparse.Namespace) -> int:
    from ..data.prepare import prepare_acdc, prepare_synapse

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if args.dataset == "synapse":
            summary = prepare_synapse(args.raw, args.output, overwrite=args.overwrite, progress=not args.no_progress)
        else:
            summary = prepare_acdc(args.raw, args.output, seed=args.seed, overwrite=args.overwrite,
                                   progress=not args.no_progress)
    for w in caught:
        print(f"warning: {w.message}")
    print(summary.format())
    return 0
