"""msvmunet export: an msvmunet checkpoint -> an ONNX model for onnxruntime."""

from __future__ import annotations

import argparse
from pathlib import Path

COMMAND = "export"
HELP = "export a checkpoint as an ONNX model (dynamic batch and size) for onnxruntime"
DESCRIPTION = (
    "Write CHECKPOINT as an ONNX model: input 'image' (batch, 1, height, width) float32, the normalised slice "
    "(height and width multiples of 32), output 'logits' (batch, classes, height, width). The preprocessing a "
    "deployer must apply (stored preprocessing, input size, mean, std, class names) is written into the model's "
    "metadata (keys msvmunet.*). With onnxruntime installed the file is checked against PyTorch."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="msvmunet checkpoint (final.pt, best.pt, ...)")
    parser.add_argument("output", type=Path, help="ONNX file to write (.onnx)")
    parser.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check against PyTorch")


def run(args: argparse.Namespace) -> int:
    from ..models.export import export_onnx

    result = export_onnx(args.checkpoint, args.output, overwrite=args.force, verify=not args.no_verify)
    meta = result.metadata
    check = ("not checked (onnxruntime not installed)" if result.relative_error is None and not args.no_verify
             else "not checked" if result.relative_error is None
             else f"onnxruntime vs PyTorch relative error {result.relative_error:.1e}")
    print(f"wrote {result.path}: input {meta['msvmunet.input']}; {check}")
    return 0
