"""msvmunet convert: official MSVM-UNet checkpoint <-> msvmunet checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

COMMAND = "convert"
HELP = "convert a checkpoint of the official code to an msvmunet checkpoint, or back"
DESCRIPTION = (
    "Convert a checkpoint trained with the official MSVM-UNet code (raw state dict or Lightning .ckpt) "
    "into an msvmunet checkpoint (configuration inferred from tensor shapes), or, with --to official, "
    "an msvmunet checkpoint back into the official key layout."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="checkpoint to read")
    parser.add_argument("output", type=Path, help="file to write")
    parser.add_argument(
        "--to", choices=("msvmunet", "official"), default="msvmunet",
        help="'msvmunet': official -> msvmunet checkpoint; 'official': msvmunet -> official state dict",
    )
    parser.add_argument(
        "--lightning", action="store_true",
        help="with --to official: wrap as a Lightning checkpoint ({'state_dict': {'_model.' + key: ...}})",
    )
    parser.add_argument("--preprocessing", choices=("synapse", "acdc"), default=None,
                        help="with --to msvmunet: store this preprocessing (with --image-size), so that predict "
                             "and evaluate need no flags")
    parser.add_argument("--image-size", type=int, default=None, metavar="S",
                        help="with --preprocessing: the network input side the model was trained at (224 in the paper)")
    parser.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")


def run(args: argparse.Namespace) -> int:
    from .. import from_official_checkpoint, load_model, save_model, to_official_state_dict
    from .._files import atomic_write
    from . import CLIError

    if args.output.exists() and not args.force:
        raise CLIError(f"{args.output} exists; pass --force to overwrite it")
    if args.lightning and args.to != "official":
        raise CLIError("--lightning only applies with --to official")
    if (args.preprocessing is None) != (args.image_size is None) or (args.preprocessing and args.to != "msvmunet"):
        raise CLIError("--preprocessing and --image-size go together, with --to msvmunet "
                       "(e.g. --preprocessing synapse --image-size 224)")
    if args.to == "msvmunet":
        from ..engine.segmenter import preset_preprocessing

        extra = {"preprocessing": preset_preprocessing(args.preprocessing, args.image_size).to_dict()} \
            if args.preprocessing else {}
        model = from_official_checkpoint(args.input)
        save_model(model, args.output, source=f"converted from official checkpoint {args.input.name}", **extra)
        cfg = model.config
        print(f"wrote {args.output}: encoder embed {cfg.encoder.embed_dim}, depths {list(cfg.encoder.depths)}, "
              f"decoder depths {list(cfg.decoder.depths)}, d_state {cfg.encoder.d_state}, {cfg.num_classes} classes")
    else:
        state = to_official_state_dict(load_model(args.input))
        obj = {"state_dict": {"_model." + k: v for k, v in state.items()}} if args.lightning else state
        atomic_write(args.output, lambda f: torch.save(obj, f))
        print(f"wrote {args.output}: {len(state)} tensors in the official key layout")
    return 0
