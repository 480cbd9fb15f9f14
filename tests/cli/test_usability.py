"""The command line a newcomer meets: Ctrl-C (a real SIGINT), mistyped flags and commands, help texts, one
spelling for output folders, check-data --kind nnunet, evaluate's progress."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

import pytest

from msvmunet.cli import build_parser, main
from msvmunet.data import make_phantom

from ..conftest import ROOT


def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every (sub)command's parser, nested ones too (prepare synapse, ...)."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[sub.prog] = sub
                found.update(commands(sub))
    return found


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom_cli")
    make_phantom(root, cases=4, test_cases=2, size=32, slices=6, seed=6, nnunet=True)
    return root


def test_ctrl_c_in_train_says_how_to_resume_with_exit_130(phantom, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--preset", "demo", "--data", str(phantom), "-o", str(run), "--image-size", "32",
            "--batch-size", "2", "--epochs", "500", "--steps-per-epoch", "2", "--device", "cpu", "--num-workers", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "msvmunet", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            # a process group of its own, as a terminal's foreground job, with SIGINT not ignored
                            # (even when the tests run where it is, as a background job)
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    try:
        while not (run / "last.pt").exists() and time.time() < deadline:  # a checkpoint to resume from
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the training process and its data-loading workers
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    last = err.strip().splitlines()[-1]
    assert last == f"msvmunet train: interrupted; resume with: msvmunet {' '.join(args)} --resume"


def test_ctrl_c_before_the_first_checkpoint_says_to_start_again(phantom, tmp_path):
    from msvmunet.cli.train import interrupted

    argv = ["train", "--data", str(phantom), "--output", str(tmp_path / "none")]
    args = build_parser().parse_args(argv)
    args._argv = argv
    assert interrupted(args) == f"no checkpoint was written yet; start again with: msvmunet {' '.join(argv)}"


@pytest.mark.parametrize("argv, hint", [
    (["train", "--epochz", "3"], "unknown option --epochz; did you mean --epochs?"),
    (["evaluate", "--checkpoint", "a", "--data", "b", "--protocl", "paper"], "did you mean --protocol?"),
    (["predict", "x.nii", "-o", "y", "--checkpoint", "c", "--overlays", "d"], "did you mean --overlay?"),
    (["trian"], "invalid choice: 'trian'"),
    (["check-data", "d", "--kind", "nnunett"], "did you mean nnunet?"),
])
def test_a_mistyped_flag_or_command_is_one_line_with_a_suggestion(argv, hint, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and hint in err and "usage:" not in err, err


def test_help_texts_describe_every_option_once():
    for prog, parser in commands(build_parser()).items():
        text = " ".join(parser.format_help().split())
        assert "(default: None)" not in text, prog
        for action in parser._actions:
            if action.option_strings and action.help != argparse.SUPPRESS and "-h" not in action.option_strings:
                assert action.help, f"{prog} {action.option_strings[0]} has no description"
                assert parser.formatter_class(prog)._get_help_string(action).count("(default:") <= 1, \
                    f"{prog} {action.option_strings[0]}"


@pytest.mark.parametrize("command", [["train"], ["evaluate", "--checkpoint", "c", "--data", "d"],
                                     ["predict", "x.nii", "--checkpoint", "c"], ["demo"]])
@pytest.mark.parametrize("flag", ["--output", "-o", "--out"])
def test_one_spelling_for_the_output_folder(command, flag):
    args = build_parser().parse_args([*command, flag, "somewhere"])
    assert args.output == "somewhere"


def test_check_data_accepts_the_nnunet_kind(phantom, capsys):
    assert main(["check-data", str(phantom / "nnunet"), "--kind", "nnunet", "--no-progress"]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_evaluate_shows_progress_over_the_cases(phantom, tmp_path, capsys):
    from msvmunet.engine import resolve_config, train

    run = train(resolve_config("demo", data=str(phantom), output=str(tmp_path / "run"), image_size=32,
                               batch_size=2, epochs=1, steps_per_epoch=1))
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run / "final.pt"), "--data", str(phantom), "-o",
                 str(tmp_path / "eval"), "--device", "cpu", "--overlays", "0"]) == 0
    err = capsys.readouterr().err
    # a bar over the 2 test cases (tqdm redraws at most every 0.1 s: a fast run may never show "2/2")
    assert "evaluate test" in err and "/2 [" in err and "case/s" in err
