"""Run folders on real files and real processes: a run is never replaced, shared or resumed by mistake;
a kill or a full disk leaves a folder the next run can use."""

from __future__ import annotations

import collections
import dataclasses
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import yaml

from msvmunet import CheckpointError, ConfigError
from msvmunet.cli import main
from msvmunet.engine import TrainConfig, train
from msvmunet.engine import run_folder as rf
from msvmunet.engine import trainer
from msvmunet.errors import DataError

from ..conftest import ROOT
from .conftest import quick_config
from .test_train import _train_epochs


def epoch_of(path):
    return torch.load(path, weights_only=True)["epoch"]


def temporaries(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp-"))


# ---------------------------------------------------------------------------------------- item 1

def test_a_run_is_replaced_only_with_force_and_only_once_the_new_run_is_set_up(tiny_phantom, tmp_path, capsys):
    run = train(quick_config(tiny_phantom, tmp_path / "run", epochs=2, steps_per_epoch=1, val_cases=1, val_every=1))
    config_text = (run / "config.yaml").read_text()
    with pytest.raises(rf.RunFolderError, match=r"holds a run \(config\.yaml, last\.pt after epoch 2 of 2, "
                                                r"final\.pt after epoch 2 of 2, best\.pt.*--resume.*--force"):
        train(quick_config(tiny_phantom, run, epochs=1))
    # --force with data that fails during set-up: the old run is untouched, config.yaml included
    empty = tmp_path / "no-data"
    empty.mkdir()
    with pytest.raises(DataError):
        train(quick_config(empty, run, epochs=1, image_size=48), force=True)
    assert (run / "config.yaml").read_text() == config_text
    assert epoch_of(run / "final.pt") == 2 and (run / "best.pt").exists()
    capsys.readouterr()
    # --force that starts: says what it replaces, and the old run's files are gone
    train(quick_config(tiny_phantom, run, epochs=1, steps_per_epoch=1, image_size=64), force=True)
    out = capsys.readouterr().out
    assert "--force: replacing the run in" in out and "final.pt after epoch 2 of 2" in out
    assert epoch_of(run / "final.pt") == 1 and not (run / "best.pt").exists()
    assert yaml.safe_load((run / "config.yaml").read_text())["image_size"] == 64
    assert len((run / "history.csv").read_text().splitlines()) == 2  # header + one epoch
    with pytest.raises(ConfigError, match="give one of them"):
        train(quick_config(tiny_phantom, run, epochs=2), resume=True, force=True)


# ---------------------------------------------------------------------------------------- item 8

def test_the_settings_are_sorted_into_fixed_and_changeable_on_resume():
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(rf.FIXED_ON_RESUME) | set(rf.MAY_CHANGE_ON_RESUME) == names
    assert not set(rf.FIXED_ON_RESUME) & set(rf.MAY_CHANGE_ON_RESUME)


def test_resume_refuses_model_or_data_changes_and_reports_the_others(tiny_phantom, tmp_path, capsys):
    config = quick_config(tiny_phantom, tmp_path / "run", epochs=2, steps_per_epoch=1)
    _train_epochs(config, 1)
    run = tmp_path / "run"
    before = (run / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"changed image_size: 32 in the run, 48 now; batch_size: 4 in the run, "
                                          r"2 now; seed: 3 in the run, 9 now"):
        train(config.replace(image_size=48, batch_size=2, seed=9), resume=True)
    with pytest.raises(ConfigError, match=r'model_options: \{"encoder".*"drop_path_rate": 0.0.*\} in the run'):
        train(config.replace(model_options={"encoder": {"drop_path_rate": 0.2}}), resume=True)
    assert (run / "config.yaml").read_text() == before and epoch_of(run / "last.pt") == 1
    capsys.readouterr()
    train(config.replace(epochs=4, val_every=3), resume=True)
    assert "changed settings (recorded in config.yaml): val_every: 10 -> 3; epochs: 2 -> 4" in capsys.readouterr().out
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["epochs"] == 4 and saved["val_every"] == 3
    # the cosine schedule anneals from the resumed point to min_lr at the new last epoch
    final = torch.load(run / "final.pt", weights_only=True)
    lrs = [row["lr"] for row in final["history"]]
    assert all(a > b for a, b in zip(lrs, lrs[1:])), lrs
    assert final["optimizer"]["param_groups"][0]["lr"] == pytest.approx(config.min_lr)


# ---------------------------------------------------------------------------------------- item 2

def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(folder, **owner):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.lock").write_text(json.dumps(owner))


def test_lock_refuses_a_live_owner_and_takes_over_a_dead_one(tmp_path, capsys):
    folder, host = tmp_path / "run", socket.gethostname()
    # a live owner on this host (this very process) and one on another host (cannot be checked)
    for owner in (dict(pid=os.getpid(), host=host, start=rf._process_start(os.getpid())),
                  dict(pid=12345, host="elsewhere.example")):
        _write_lock(folder, **owner)
        with pytest.raises(rf.RunFolderError, match=rf"in use by another training run \(pid {owner['pid']} on "
                                                    rf"{owner['host']}.*delete .*train.lock"):
            rf.Lock.acquire(folder)
    # dead: a process that has exited; a live pid that another process has reused; an unreadable lock
    for owner, said in ((dict(pid=_dead_pid(), host=host), "which no longer runs"),
                        (dict(pid=os.getppid(), host=host, start="1"), "which no longer runs"),
                        (None, "an unreadable lock")):
        if owner is None:
            (folder / "train.lock").write_text("{half a")
        else:
            _write_lock(folder, **owner)
        lock = rf.Lock.acquire(folder)
        out = capsys.readouterr().out
        assert f"taking over {folder / 'train.lock'}: " in out and said in out
        held = json.loads((folder / "train.lock").read_text())
        assert held["pid"] == os.getpid() and held["host"] == host and held["token"] == lock.token
        lock.release()
        assert not (folder / "train.lock").exists()
    assert [p.name for p in folder.iterdir()] == []  # no renamed stale lock left behind


def test_lock_released_and_temporaries_removed_at_the_end(tiny_phantom, tmp_path, monkeypatch, capsys):
    with pytest.raises(ConfigError, match="--pretrained-encoder PATH"):
        train(quick_config(tiny_phantom, tmp_path / "new").replace(pretrained_encoder=None))
    assert not (tmp_path / "new").exists()  # made for the lock, left empty: removed again

    def save_epoch(run, *args):  # as if a write of the run had been cut short
        save(run, *args)
        (run.run_dir / ".tmp-0badc0de-best.pt").write_bytes(b"partial")

    save = trainer.save_epoch
    monkeypatch.setattr(trainer, "save_epoch", save_epoch)
    run = train(quick_config(tiny_phantom, tmp_path / "run", epochs=1, steps_per_epoch=1))
    assert "removed 1 temporary file(s) of an interrupted write" in capsys.readouterr().out
    assert not temporaries(run) and not (run / "train.lock").exists()


# ---------------------------------------------------------------------------------------- items 2 and 6

SLOW_FIRST_SAVE = """
import sys, time, torch
save = torch.save
def slow(obj, f, *args, **kwargs):  # the checkpoint lands in its temporary file, then the writer stalls
    save(obj, f, *args, **kwargs)
    f.flush()
    time.sleep(600)
torch.save = slow
from msvmunet.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_during_the_first_checkpoint_write(tiny_phantom, tmp_path, capsys):
    run_dir = tmp_path / "killed"
    args = ["train", "--preset", "demo", "--data", str(tiny_phantom), "--output", str(run_dir), "--image-size", "32",
            "--batch-size", "4", "--epochs", "2", "--steps-per-epoch", "1"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", SLOW_FIRST_SAVE, *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not (run_dir.exists() and temporaries(run_dir)):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "no checkpoint temporary appeared"
            time.sleep(0.05)
        # a second process on the folder, while the first holds it, is refused (--force does not override)
        second = subprocess.run([sys.executable, "-m", "msvmunet", *args, "--force"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 1
        assert second.stderr.strip().count("\n") == 0, second.stderr
        assert f"in use by another training run (pid {proc.pid} on {socket.gethostname()}" in second.stderr
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(30)
    (left,) = temporaries(run_dir)
    assert left.endswith("-last.pt") and not (run_dir / "last.pt").exists()
    assert (run_dir / "train.lock").exists()
    capsys.readouterr()
    # --resume: nothing to resume, in one line that says how to start afresh; the stale lock is taken over
    assert main([*args, "--resume"]) == 1
    out, err = capsys.readouterr()
    assert err.strip().count("\n") == 0
    assert "nothing to resume in" in err and "start it afresh with --force instead of --resume" in err
    assert f"taking over {run_dir / 'train.lock'}: the lock of pid {proc.pid}" in out
    assert f"removed 1 temporary file(s) of an interrupted write from {run_dir}: {left}" in out
    assert not temporaries(run_dir) and not (run_dir / "train.lock").exists()
    assert main([*args, "--force"]) == 0
    assert epoch_of(run_dir / "final.pt") == 2
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml", "final.pt", "history.csv", "last.pt",
                                                         "tensorboard"]


def test_resume_without_a_run_says_what_to_do(tiny_phantom, tmp_path):
    with pytest.raises(CheckpointError, match=r"nothing to resume: .*last\.pt not found \(no run in .*\); start a "
                                              r"new run without --resume"):
        train(quick_config(tiny_phantom, tmp_path / "none"), resume=True)
    assert not (tmp_path / "none").exists()


def test_only_the_runs_own_temporaries_are_removed(tmp_path, capsys):
    for name in (".tmp-0123abcd-last.pt", ".tmp-89abcdef-config.yaml", ".tmp-0123abcd-notes.txt",
                 ".tmp-xyz-last.pt", "last.pt.bak"):
        (tmp_path / name).write_bytes(b"x" * 10)
    assert len(rf.remove_temporaries(tmp_path)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-0123abcd-notes.txt", ".tmp-xyz-last.pt",
                                                          "last.pt.bak"]


# ---------------------------------------------------------------------------------------- item 7

def test_disk_full_is_one_line_at_once_and_the_last_good_checkpoint_stays(tiny_phantom, tmp_path, monkeypatch):
    from msvmunet.engine import checkpointing

    real = checkpointing.atomic_save

    def full_after_epoch_1(obj, path):
        if obj["epoch"] >= 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(obj, path)

    finished = []

    def recording(run, runner, epoch):
        row = train_epoch(run, runner, epoch)
        finished.append(epoch + 1)
        return row

    train_epoch = trainer.train_epoch
    monkeypatch.setattr(checkpointing, "atomic_save", full_after_epoch_1)
    monkeypatch.setattr(trainer, "train_epoch", recording)
    run_dir = tmp_path / "run"
    with pytest.raises(rf.DiskFullError) as failed:
        train(quick_config(tiny_phantom, run_dir, epochs=4, steps_per_epoch=2))
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith(f"disk full: {run_dir} has ") and "writing last.pt needs about " in message
    assert f"the last good checkpoint {run_dir / 'last.pt'} is kept" in message and "--resume" in message
    assert finished == [1, 2]  # raised while epoch 3 trained, right after epoch 2's write failed
    assert epoch_of(run_dir / "last.pt") == 1
    assert not temporaries(run_dir) and not (run_dir / "train.lock").exists()


def test_the_writer_reports_a_failed_write_at_the_next_batch(tmp_path, monkeypatch):
    from msvmunet.engine import checkpointing

    def full(obj, path):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(checkpointing, "atomic_save", full)
    writer = checkpointing.CheckpointWriter()
    # torch.save's error alone: a full disk only when the folder has less room than the checkpoint needs
    writer.save(tmp_path / "last.pt", {"w": torch.zeros(2**20)})
    writer.drain()
    with pytest.raises(RuntimeError, match="PytorchStreamWriter failed writing file"):
        next(iter(writer.watch([1, 2])))
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(rf.shutil, "disk_usage", lambda path: usage(2**30, 2**30 - 2**19, 2**19))
    writer.save(tmp_path / "last.pt", {"w": torch.zeros(2**20)})
    writer.drain()
    batches = writer.watch([1, 2])
    with pytest.raises(rf.DiskFullError, match=r"has 0.5 MB free, writing last.pt needs about 4.0 MB"):
        next(iter(batches))
    assert list(batches) == [1, 2]  # reported once
    writer.close()

    class Loader:  # a DataLoader starts its workers when its iterator is made
        made = 0
        num_workers = 2

        def __iter__(self):
            Loader.made += 1
            return iter([3])

    watched = writer.watch(Loader())
    batches = iter(watched)
    assert Loader.made == 1 and watched.num_workers == 2 and list(batches) == [3]


def _tensors(path):
    out, todo = [], [torch.load(path, weights_only=True)]
    while todo:
        obj = todo.pop()
        if isinstance(obj, torch.Tensor):
            out.append(obj)
        elif isinstance(obj, dict):
            todo += obj.values()
        elif isinstance(obj, (list, tuple)):
            todo += obj
    return out


@pytest.fixture
def small_disk(tmp_path):
    """A 36 MB tmpfs: room for one checkpoint of the quick configuration (24.5 MB), not for two."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=36m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_disk_full_on_a_real_small_disk(tiny_phantom, small_disk):
    run_dir = small_disk / "run"
    with pytest.raises(rf.DiskFullError) as failed:
        train(quick_config(tiny_phantom, run_dir, epochs=3, steps_per_epoch=1))
    message = str(failed.value)
    print(message)
    needed = sum(t.numel() * t.element_size() for t in _tensors(run_dir / "last.pt"))  # the same shapes each epoch
    assert message.startswith(f"disk full: {run_dir} has ")
    assert f"writing last.pt needs about {needed / 2**20:.1f} MB" in message
    assert epoch_of(run_dir / "last.pt") == 1
    assert not temporaries(run_dir) and not (run_dir / "train.lock").exists()
