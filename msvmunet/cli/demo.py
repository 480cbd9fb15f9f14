"""msvmunet demo: the whole pipeline offline, on a synthetic phantom, in minutes on a CPU."""

from __future__ import annotations

import argparse

COMMAND = "demo"
HELP = "make a synthetic CT phantom, train a small MSVM-UNet on it, evaluate, and print the table"
DESCRIPTION = (
    "Runs the pipeline end to end with nothing downloaded: writes a phantom dataset in the Synapse layout, "
    "trains the 'nano' configuration with the paper's loss, optimiser and augmentations, evaluates it on the "
    "held-out phantom volumes under the paper and strict protocols, and writes reports and pictures."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", "--out", default="runs/demo", help="folder for the phantom, the run and the reports")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--epochs", type=int, default=None, help="override the demo's number of epochs")


def run(args: argparse.Namespace) -> int:
    from ..engine.demo import run_demo

    run_demo(args.output, device=args.device, epochs=args.epochs)
    return 0
