"""Training options checked once, whatever their source: a YAML file or flags give the same one-line errors,
naming the key (and the file), before anything is written."""

from __future__ import annotations

import os

import pytest
import yaml

from msvmunet import ConfigError
from msvmunet.cli import build_parser, main
from msvmunet.engine.config import TrainConfig, resolve_config, save_yaml

# (YAML text, the same values as flags, the key the message names)
BAD = {
    "epochs-text": ('epochs: "ten"', ["--epochs", "ten"], "epochs"),
    "epochs-fraction": ("epochs: 2.5", ["--epochs", "2.5"], "epochs"),
    "lr-text": ("lr: fast", ["--lr", "fast"], "lr"),
    "lr-negative": ("lr: -1", ["--lr", "-1"], "lr"),
    "betas-one-number": ("betas: 0.9", ["--betas", "0.9", "1.5"], "betas"),
    "model-options-list": ("model_options: [1, 2]", ["--model-options", "[1, 2]"], "model_options"),
    "unknown-encoder-key": ("model_options: {encoder: {bogus: 1}}", ["--model-options", "{encoder: {bogus: 1}}"],
                            "model_options"),
    "encoder-value-text": ("model_options: {encoder: {drop_path_rate: high}}",
                           ["--model-options", "{encoder: {drop_path_rate: high}}"], "model_options"),
    "workers-negative": ("num_workers: -2", ["--num-workers", "-2"], "num_workers"),
    "augment-not-a-boolean": ('augment: "maybe"', ["--config", "{yaml}"], "augment"),
    "no-loss": ("ce_weight: 0\ndice_weight: 0", ["--ce-weight", "0", "--dice-weight", "0"], "dice_weight"),
    "unknown-model": ("model: huge", ["--model", "huge"], "model"),
    "val-cases-fraction": ("val_cases: 1.5", ["--val-cases", "1.5"], "val_cases"),
    "device": ("device: gpu", ["--device", "gpu"], "device"),
}


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_bad_yaml_value_is_one_line_naming_the_file_and_key(case, tmp_path):
    text, _, key = case
    path = tmp_path / "bad.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as info:
        resolve_config("demo", path, data=str(tmp_path))
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert key in message or key.replace("dice", "ce") in message


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_bad_flag_value_is_one_line_naming_the_flag_before_anything_is_written(case, tmp_path, capsys):
    text, flags, key = case
    (tmp_path / "bad.yaml").write_text(text + "\n")
    flags = [f.replace("{yaml}", str(tmp_path / "bad.yaml")) for f in flags]
    run = tmp_path / "run"
    assert main(["train", "--preset", "demo", "--data", str(tmp_path), "--output", str(run), *flags]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("msvmunet train: error:")
    assert key in err and "Traceback" not in err
    assert not run.exists()


@pytest.mark.parametrize("text, expected", [('augment: "no"', False), ("augment: no", False), ('augment: "yes"', True),
                                            ("augment: false", False), ("augment: true", True)])
def test_augment_reads_booleans_strictly(text, expected, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(text + "\n")
    assert resolve_config(None, path).augment is expected


def test_values_are_converted_once_for_yaml_and_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 5e-4\nepochs: 12\nbetas: [0.8, 0.99]\nval_cases: case0001,case0002\n")  # YAML 1.1: 5e-4 is text
    from_yaml = resolve_config(None, path)
    args = build_parser().parse_args(["train", "--lr", "5e-4", "--epochs", "12", "--betas", "0.8", "0.99",
                                      "--val-cases", "case0001,case0002"])
    from msvmunet.cli.train import _config

    from_flags = _config(args)
    for config in (from_yaml, from_flags):
        assert config.lr == 5e-4 and config.epochs == 12 and config.betas == (0.8, 0.99)
        assert config.val_cases == ["case0001", "case0002"]
    assert resolve_config(None, None, val_cases="2").val_cases == 2
    assert resolve_config(None, None, val_cases="0.25").val_cases == 0.25
    assert resolve_config(None, None, steps_per_epoch="none").steps_per_epoch is None


def test_the_model_options_help_example_works_as_written():
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    help_text = " ".join(train.format_help().split())
    example = help_text.split("e.g. '", 1)[1].split("'", 1)[0]
    assert example == "{encoder: {drop_path_rate: 0.1}}"
    from msvmunet.cli.train import _config

    config = _config(parser.parse_args(["train", "--model-options", example]))
    assert config.model_options == {"encoder": {"drop_path_rate": 0.1}}


def test_unknown_option_in_yaml_is_named_with_the_closest_one(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epoch: 3\n")
    with pytest.raises(ConfigError, match="epoch.*did you mean epochs"):
        resolve_config(None, path)


def test_num_workers_auto_is_sized_to_the_host_and_recorded(tmp_path, monkeypatch):
    cores = len(os.sched_getaffinity(0))
    config = TrainConfig()
    assert isinstance(config.num_workers, int) and 0 <= config.num_workers <= max(cores - 1, 0)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})  # a 2-core machine: one worker, no warning
    assert TrainConfig(num_workers="auto").num_workers == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert TrainConfig().num_workers == 16  # capped at 16
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")  # torchrun: the cores are shared by the processes
    assert TrainConfig().num_workers == 3
    assert TrainConfig(num_workers=5).num_workers == 5 and TrainConfig(num_workers="2").num_workers == 2
    save_yaml(TrainConfig(), tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["num_workers"] == 3
