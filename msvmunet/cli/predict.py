"""msvmunet predict: segment new NIfTI scans, DICOM series or 2-D images."""

from __future__ import annotations

import argparse

from ._inference import add_inference_arguments, inference_options

COMMAND = "predict"
HELP = "segment NIfTI volumes, DICOM series (or PNG/JPEG images) with trained checkpoints"
DESCRIPTION = (
    "Apply the preprocessing stored in the checkpoint (intensity window, slicing axis, size), segment slice "
    "by slice, and write label files with the input's geometry: <stem>_seg.nii.gz for NIfTI volumes and "
    "DICOM series (a folder holding one series), <stem>_seg.png (index values) and <stem>_seg_preview.png "
    "(coloured) for images. INPUT may be files or folders. A failing input does not stop the others; the "
    "failed ones are listed at the end (exit status 1)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="NIfTI/image files, DICOM series folders, or folders of NIfTI/image files")
    parser.add_argument("-o", "--output", "--out", required=True,
                        help="output folder (or, for a single input, a file name ending .nii.gz / .png)")
    add_inference_arguments(parser)
    parser.add_argument("--overlay", default=None, metavar="DIR", help="also write overlay PNGs into DIR")
    parser.add_argument("--dicom-seg", action="store_true",
                        help="for DICOM series, also write a DICOM-SEG referencing the series (<name>_seg.dcm; "
                             "needs highdicom)")
    parser.add_argument("--preprocessing", choices=("synapse", "acdc"), default=None,
                        help="for checkpoints without stored preprocessing (converted official ones)")


def run(args: argparse.Namespace) -> int:
    from ..engine.predict import predict

    predict(args.checkpoint, args.inputs, args.output, overlay_dir=args.overlay, preprocessing=args.preprocessing,
            dicom_seg=args.dicom_seg, **inference_options(args))
    return 0
