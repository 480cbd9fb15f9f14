"""msvmunet train: the paper's recipe, every value overridable by flag or YAML file."""

from __future__ import annotations

import argparse
import dataclasses
import shlex

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
    # values go to TrainConfig as given (text), which checks them, as it checks the YAML file's
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        text = f.metadata["help"]
        if "default" not in text and default not in ("", None):
            text += f" (default: {default})"
        kwargs: dict = {"help": text, "default": None}
        if isinstance(default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif f.name == "betas":
            kwargs.update(nargs=2, metavar=("BETA1", "BETA2"))
        elif f.name == "inductor":
            kwargs.update(nargs="*", metavar="FIELD=VALUE")
        elif f.name == "model_options":
            kwargs["metavar"] = "YAML"
        flags = [_flag(f.name)] + (["-o", "--out"] if f.name == "output" else [])
        parser.add_argument(*flags, dest=f.name, **kwargs)


def _config(args: argparse.Namespace):
    from ..engine.config import TrainConfig, resolve_config

    return resolve_config(args.preset, args.config, **{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})


def run(args: argparse.Namespace) -> int:
    from ..engine.compiling import parse_inductor_items
    from ..engine.trainer import train

    if args.inductor is not None:  # FIELD=VALUE items replace the default settings; none: inductor's own
        args.inductor = parse_inductor_items(args.inductor)
    run_dir = train(_config(args), resume=args.resume, force=args.force)
    print(f"run folder: {run_dir}")
    return 0


def interrupted(args: argparse.Namespace) -> str:
    """After Ctrl-C: the command that resumes the run (the same one, with --resume)."""
    from pathlib import Path

    words = ["msvmunet", "train", *args._argv[args._argv.index("train") + 1:]]
    resuming = any(w == "--resume" or w.startswith("--resume=") for w in words)
    try:
        output = Path(_config(args).output)
    except Exception:  # the hint must not fail; the command is still the right one
        output = None
    if not resuming and output is not None and not (output / "last.pt").is_file():
        if (output / "config.yaml").is_file() and "--force" not in words:
            words.append("--force")  # the folder holds the run just started: replacing it takes --force
        return f"no checkpoint was written yet; start again with: {shlex.join(words)}"
    return f"resume with: {shlex.join(words if resuming else words + ['--resume'])}"
