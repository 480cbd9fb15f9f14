"""Real multi-process DDP on the CPU (gloo), launched with torchrun."""

from __future__ import annotations

import subprocess
import sys

import torch

from ..conftest import ROOT


def test_two_process_ddp_training(tiny_phantom, tmp_path):
    run_dir = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "msvmunet", "train", "--preset", "demo", "--data", str(tiny_phantom), "--output", str(run_dir),
           "--device", "cpu", "--image-size", "32", "--batch-size", "4", "--epochs", "2", "--steps-per-epoch", "2",
           "--val-cases", "1", "--val-every", "1"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    # rank 0 alone logs and writes
    assert result.stdout.count("epoch 2 | loss") == 1
    assert "2 process(es)" in result.stdout
    ckpt = torch.load(run_dir / "final.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and len(ckpt["history"]) == 2
    assert all(0.0 <= row["val_dice"] <= 1.0 for row in ckpt["history"])
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])  # the DDP wrapper is stripped
    assert not (run_dir / "train.lock").exists()  # rank 0 alone locked the folder, and released it
