"""msvmunet predict: segment new NIfTI scans or 2-D images."""

from __future__ import annotations

import argparse

COMMAND = "predict"
HELP = "segment NIfTI volumes (or PNG/JPEG images) with a trained checkpoint"
DESCRIPTION = (
    "Apply the preprocessing stored in the checkpoint (intensity window, slicing axis, size), segment slice "
    "by slice, and write label files with the input's affine and header: <stem>_seg.nii.gz for volumes, "
    "<stem>_seg.png for images. INPUT may be files or folders."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="NIfTI/image files, or folders of them")
    parser.add_argument("-o", "--output", "--out", required=True,
                        help="output folder (or, for a single input, a file name ending .nii.gz / .png)")
    parser.add_argument("--checkpoint", required=True, help="msvmunet checkpoint")
    parser.add_argument("--overlay", default=None, metavar="DIR", help="also write overlay PNGs into DIR")
    parser.add_argument("--preprocessing", choices=("synapse", "acdc"), default=None,
                        help="for checkpoints without stored preprocessing (converted official ones)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp16", "fp32"),
                        help="autocast dtype; auto: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--batch-size", type=int, default=32, help="slices per forward pass")
    parser.add_argument("--backend", default="auto", help="selective-scan backend: auto, triton, torch")


def run(args: argparse.Namespace) -> int:
    from ..engine.predict import predict

    predict(args.checkpoint, args.inputs, args.output, overlay_dir=args.overlay, preprocessing=args.preprocessing,
            device=args.device, precision=args.precision, batch_size=args.batch_size, backend=args.backend)
    return 0
