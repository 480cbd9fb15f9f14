"""Training engine on real files and real processes: resume, kill -9, bad checkpoints, NaN, DDP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from msvmunet import CheckpointError, ConfigError, load_model
from msvmunet.engine import TrainingError, train

from ..conftest import ROOT
from .conftest import quick_config


def weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_run_folder_and_checkpoint_contents(tiny_phantom, tmp_path):
    run = train(quick_config(tiny_phantom, tmp_path / "run", val_cases=1, val_every=1))
    assert {"config.yaml", "last.pt", "final.pt", "best.pt", "history.csv"} <= {p.name for p in run.iterdir()}
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["image_size"] == 32 and saved["model"] == "nano" and saved["precision"] == "fp32"
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["format"] == "msvmunet"
    assert {"optimizer", "scheduler", "rng", "preprocessing", "classes", "train_config", "history"} <= set(ckpt)
    assert ckpt["classes"][0] == "background" and len(ckpt["classes"]) == 9
    assert len(ckpt["history"]) == 2 and "val_dice" in ckpt["history"][0]
    best = torch.load(run / "best.pt", weights_only=True)
    assert "held out of training" in best["selection"]
    assert not any(".tmp" in p.name for p in run.iterdir())
    load_model(run / "final.pt")  # a training checkpoint is a model checkpoint too


@pytest.fixture
def one_thread():
    """CPU kernels sum in a thread-dependent order; with one thread, runs repeat bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_stop_and_resume_give_the_same_weights(tiny_phantom, tmp_path, one_thread):
    # stochastic depth and augmentation on, so that the restored random state matters too
    config = quick_config(tiny_phantom, tmp_path / "full", epochs=3, freeze_encoder_epochs=1, augment=True,
                          model_options={"encoder": {"drop_path_rate": 0.3}, "decoder": {"drop_path_rate": 0.3}})
    full = train(config)
    # the same run interrupted after its first epoch (across the encoder unfreeze), then resumed
    partial = config.replace(output=str(tmp_path / "cut"))
    _train_epochs(partial, 1)
    resumed = train(partial, resume=True)
    a, b = weights(full / "final.pt"), weights(resumed / "final.pt")
    assert a.keys() == b.keys()
    def distance(x, y):
        keys = [k for k in x if x[k].is_floating_point()]
        num = sum((x[k].double() - y[k].double()).pow(2).sum() for k in keys)
        return (num / sum(x[k].double().pow(2).sum() for k in keys)).sqrt().item()

    print("resumed vs uninterrupted:", distance(a, b))
    assert distance(a, b) < 1e-7
    # and a resume that forgot a piece of state (here: the optimiser moments) would not
    lost = config.replace(output=str(tmp_path / "lost"))
    _train_epochs(lost, 1)
    state = torch.load(tmp_path / "lost" / "last.pt", weights_only=True)
    state["optimizer"]["state"] = {}
    torch.save(state, tmp_path / "lost" / "last.pt")
    c = weights(train(lost, resume=True) / "final.pt")
    print("resumed without optimiser state:", distance(a, c))
    assert distance(a, c) > 1e-2
    history = torch.load(resumed / "final.pt", weights_only=True)["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3]


def _train_epochs(config, epochs):
    """Run ``config`` but stop right after ``epochs`` epochs are checkpointed, as an interruption would
    (the schedule keeps config.epochs)."""
    from msvmunet.engine import trainer as module

    class Stop(Exception):
        pass

    class StoppingWriter(module.CheckpointWriter):
        def save(self, path, obj, **kwargs):
            super().save(path, obj, **kwargs)
            if path.name == "last.pt" and obj["epoch"] == epochs:
                self.wait()
                raise Stop

    original = module.CheckpointWriter
    module.CheckpointWriter = StoppingWriter
    try:
        module.train(config)
    except Stop:
        pass
    finally:
        module.CheckpointWriter = original


def test_resume_refuses_another_model_and_corrupt_files(tiny_phantom, tmp_path):
    run = train(quick_config(tiny_phantom, tmp_path / "run", epochs=1))
    other = quick_config(tiny_phantom, run, epochs=2, model_options={"decoder": {"depths": [1, 1, 2]}})
    with pytest.raises(ConfigError, match=r'changed model_options: .* in the run, \{"decoder": \{"depths": '
                                          r'\[1, 1, 2\]\}\} now'):
        train(other, resume=True)
    # a checkpoint without its training settings is still checked against the model built
    state = torch.load(run / "last.pt", weights_only=True)
    del state["train_config"]
    torch.save(state, run / "last.pt")
    with pytest.raises(CheckpointError, match=r"another model configuration \(decoder\.depths"):
        train(other, resume=True)
    (run / "last.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not an msvmunet/PyTorch checkpoint"):
        train(quick_config(tiny_phantom, run, epochs=2), resume=True)
    with pytest.raises(CheckpointError, match="not found"):
        train(quick_config(tiny_phantom, tmp_path / "empty", epochs=2), resume=True)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_phantom, tmp_path):
    run_dir = tmp_path / "run"
    train(quick_config(tiny_phantom, run_dir, epochs=1))
    good = torch.load(run_dir / "last.pt", weights_only=True)
    # make the resumed run diverge: an absurd learning rate in the optimiser state it restores
    state = dict(good)
    state["optimizer"]["param_groups"][0]["lr"] = 1e30
    torch.save(state, run_dir / "last.pt")
    with pytest.raises(TrainingError, match=r"the loss became (nan|inf) at epoch 2.*last good checkpoint"):
        train(quick_config(tiny_phantom, run_dir, epochs=6), resume=True)
    kept = torch.load(run_dir / "last.pt", weights_only=True)
    assert kept["epoch"] == 1
    assert all(torch.equal(kept["state_dict"][k], v) for k, v in good["state_dict"].items())


def test_pretrained_encoder_must_be_explicit(tiny_phantom, tmp_path):
    with pytest.raises(ConfigError, match="--pretrained-encoder PATH"):
        train(quick_config(tiny_phantom, tmp_path / "a").replace(pretrained_encoder=None))
    with pytest.raises(CheckpointError, match="not found"):
        train(quick_config(tiny_phantom, tmp_path / "b", pretrained_encoder=str(tmp_path / "missing.pth")))


def test_kill_9_mid_epoch_then_resume(tiny_phantom, tmp_path):
    run_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "msvmunet", "train", "--preset", "demo", "--data", str(tiny_phantom),
           "--output", str(run_dir), "--image-size", "32", "--batch-size", "2", "--epochs", "40",
           "--steps-per-epoch", "12", "--seed", "5"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = run_dir / "last.pt"
    deadline = time.time() + 120
    try:
        # wait for a second completed epoch, then kill in the middle of the next one
        while time.time() < deadline:
            if last.exists() and torch.load(last, weights_only=True)["epoch"] >= 2:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.2)
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    done = torch.load(last, weights_only=True)["epoch"]  # loads: never a half-written file
    assert 2 <= done < 40
    resumed = subprocess.run(cmd[:-2] + ["--epochs", str(done + 1), "--seed", "5", "--resume"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"after epoch {done}" in resumed.stdout
    assert f"the lock of pid {proc.pid} on" in resumed.stdout  # the killed run's lock, taken over
    assert f"epochs: 40 -> {done + 1}" in resumed.stdout
    ckpt = torch.load(run_dir / "final.pt", weights_only=True)
    assert ckpt["epoch"] == done + 1
    assert [row["epoch"] for row in ckpt["history"]] == list(range(1, done + 2))


def test_out_of_memory_is_recognised_and_answered_with_a_batch_size():
    from msvmunet.engine.trainer import is_out_of_memory, out_of_memory_error

    with pytest.raises(RuntimeError) as failed:  # a real allocation the CPU allocator refuses
        torch.empty(2**60, dtype=torch.uint8)
    assert is_out_of_memory(failed.value)
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    message = str(out_of_memory_error(torch.device("cuda:0"), 32, 1, (224, 224)))
    assert "cuda:0 ran out of memory at 32 images per process (224x224)" in message
    assert "--batch-size 16" in message
    assert "--batch-size 2 (or a smaller --image-size)" in str(out_of_memory_error(torch.device("cuda:0"), 2, 2, (224, 224)))
