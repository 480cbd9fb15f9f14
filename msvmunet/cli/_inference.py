"""The options ``predict`` and ``evaluate`` share: checkpoints (an ensemble), TTA, post-processing, device."""

from __future__ import annotations

import argparse
from typing import Any


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, nargs="+", action="extend", metavar="CKPT",
                        help="msvmunet checkpoint(s) (after the INPUTs); several files or a folder of .pt files form an "
                             "ensemble (their softmax is averaged)")
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation: average the softmax over the mirrorings none, x, y, xy")
    parser.add_argument("--keep-largest", nargs="?", const="all", default=None, metavar="CLASSES",
                        help="keep only the largest 3-D connected component of each class (comma-separated names "
                             "or indices; all foreground classes when no value is given)")
    parser.add_argument("--image-size", type=int, default=None, metavar="S",
                        help="the network's input side, for checkpoints that do not store it (converted official "
                             "ones: 224)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp16", "fp32"),
                        help="autocast dtype; auto: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="images per forward pass (TTA's mirrored copies included)")
    parser.add_argument("--backend", default="auto", help="selective-scan backend: auto, triton, torch")


def inference_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``predict``/``evaluate`` that :func:`add_inference_arguments` parsed."""
    return dict(tta=args.tta, keep_largest=args.keep_largest, image_size=args.image_size, device=args.device,
                precision=args.precision, batch_size=args.batch_size, backend=args.backend)
