"""msvmunet train: the paper's recipe, every value overridable by flag or YAML file."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing

COMMAND = "train"
HELP = "train MSVM-UNet (presets: synapse, acdc, demo); runs under torchrun for several GPUs"
DESCRIPTION = (
    "Train MSVM-UNet with the paper's recipe. Values come from the preset, then the --config YAML file, then "
    "the flags given. The resolved configuration is saved as <output>/config.yaml. For several GPUs: "
    "torchrun --nproc_per_node N -m msvmunet train ..."
)

# defaults are those of the preset/YAML, so the flags' own default (None) is not shown
FORMATTER = argparse.HelpFormatter


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..engine.config import PRESETS, TrainConfig

    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="start from a recipe: synapse / acdc (the paper's), demo (phantom, CPU, minutes)")
    parser.add_argument("--config", default=None, help="YAML file of options (keys as below, with underscores)")
    parser.add_argument("--resume", nargs="?", const=True, default=None,
                        help="continue a run: from <output>/last.pt, or from the checkpoint given")
    parser.add_argument("--force", action="store_true",
                        help="replace the run in --output (its checkpoints and history are removed once the new "
                             "run is set up); without it, a folder holding a run is refused")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        hint, default = hints[f.name], f.default if f.default is not dataclasses.MISSING else f.default_factory()
        text = f.metadata["help"]
        if "default" not in text:
            text += f" (default: {default!r})"
        kwargs: dict = {"help": text, "default": None}
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif f.name == "betas":
            kwargs.update(nargs=2, type=float, metavar=("BETA1", "BETA2"))
        elif f.name == "val_cases":
            kwargs["type"] = _cases
        elif f.name == "inductor":
            kwargs.update(nargs="*", metavar="FIELD=VALUE")
        elif f.name == "model_options":
            kwargs["type"] = json.loads
            kwargs["metavar"] = "JSON"
        elif hint in (int, float, str):
            kwargs["type"] = hint
        else:  # Optional[int] / Optional[str]
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            kwargs["type"] = args[0] if args else str
        parser.add_argument(_flag(f.name), dest=f.name, **kwargs)


def _cases(text: str):
    """'case0005,case0006' -> names; '2' -> a count; '0.1' -> a fraction."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return [c.strip() for c in text.split(",") if c.strip()]


def run(args: argparse.Namespace) -> int:
    from ..engine.compiling import parse_inductor_items
    from ..engine.config import TrainConfig, resolve_config
    from ..engine.trainer import train

    names = [f.name for f in dataclasses.fields(TrainConfig)]
    if args.inductor is not None:  # FIELD=VALUE items replace the default settings; none: inductor's own
        args.inductor = parse_inductor_items(args.inductor)
    config = resolve_config(args.preset, args.config, **{n: getattr(args, n) for n in names})
    run_dir = train(config, resume=args.resume, force=args.force)
    print(f"run folder: {run_dir}")
    return 0
