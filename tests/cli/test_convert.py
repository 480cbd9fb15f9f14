"""msvmunet convert, run as a user would."""

from __future__ import annotations

import subprocess
import sys

import torch

from msvmunet import load_model
from msvmunet.cli import main

from ..conftest import ROOT, rel_err


def test_convert_official_lightning_checkpoint_and_back(reference, tmp_path, capsys):
    ref = torch.load(reference / "official_small.pt", weights_only=True)
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"_model." + k: v for k, v in ref["state_dict"].items()}}, ckpt)

    out = tmp_path / "model.pt"
    assert main(["convert", str(ckpt), str(out)]) == 0
    assert "depths [1, 1, 2, 1]" in capsys.readouterr().out
    model = load_model(out)
    with torch.no_grad():
        assert rel_err(model(ref["input"]), ref["output"]) < 1e-4

    back = tmp_path / "official.ckpt"
    assert main(["convert", str(out), str(back), "--to", "official", "--lightning"]) == 0
    state = torch.load(back, weights_only=True)["state_dict"]
    assert set(state) == {"_model." + k for k in ref["state_dict"]}
    assert all(torch.equal(state["_model." + k], v) for k, v in ref["state_dict"].items())


def test_convert_refuses_to_overwrite_and_reports_bad_input(tmp_path, capsys):
    target = tmp_path / "exists.pt"
    target.write_bytes(b"keep me")
    assert main(["convert", str(tmp_path / "missing.ckpt"), str(target)]) == 1
    assert "exists; pass --force" in capsys.readouterr().err
    assert target.read_bytes() == b"keep me"
    assert main(["convert", str(tmp_path / "missing.ckpt"), str(tmp_path / "new.pt")]) == 1
    assert "not found" in capsys.readouterr().err


def test_console_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "msvmunet", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and "convert" in result.stdout
