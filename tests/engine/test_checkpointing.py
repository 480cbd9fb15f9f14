"""The background checkpoint writer: snapshots, atomic files, errors surfaced."""

from __future__ import annotations

import pytest
import torch

from msvmunet.engine.checkpointing import CheckpointWriter


def test_writer_snapshots_at_save_time_and_writes_whole_files(tmp_path):
    writer = CheckpointWriter()
    weight = torch.ones(1000)
    writer.save(tmp_path / "last.pt", {"w": weight, "epoch": 1, "nested": {"m": [weight * 2]}})
    weight.fill_(5.0)  # training goes on while the file is written
    writer.wait()
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert torch.equal(saved["w"], torch.ones(1000)) and saved["epoch"] == 1
    assert torch.equal(saved["nested"]["m"][0], torch.full((1000,), 2.0))
    writer.save(tmp_path / "last.pt", {"epoch": 2})
    writer.close()
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_write_errors_are_raised_at_the_next_wait(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    writer = CheckpointWriter()
    writer.save(blocker / "last.pt", {"epoch": 1})
    with pytest.raises(OSError):
        writer.wait()
    writer.wait()  # reported once


def test_copies_are_written_from_the_same_snapshot(tmp_path):
    writer = CheckpointWriter()
    weight = torch.randn(5)
    state = {"w": weight, "epoch": 3, "selection": "epoch 3"}
    writer.save(tmp_path / "last.pt", state, copies={tmp_path / "final.pt": {"selection": "final epoch 3"}})
    weight.add_(1.0)  # after save: in neither file
    writer.close()
    last, final = (torch.load(tmp_path / n, weights_only=True) for n in ("last.pt", "final.pt"))
    assert torch.equal(last["w"], weight - 1.0) and torch.equal(final["w"], last["w"])
    assert (last["selection"], final["selection"]) == ("epoch 3", "final epoch 3") and final["epoch"] == 3


def test_a_slow_disk_writes_the_newest_last_checkpoint_and_every_other_file(tmp_path, monkeypatch):
    """Saves never wait for the disk: a waiting last.pt is replaced by the next one (supersede), other files
    are all written in order, and close() writes what waits."""
    import threading

    from msvmunet.engine import checkpointing

    release, written = threading.Event(), []
    real_save = checkpointing.atomic_save

    def slow_save(obj, path):
        release.wait(timeout=30)  # the disk is busy until the test lets it go
        written.append((path.name, obj["epoch"]))
        return real_save(obj, path)

    monkeypatch.setattr(checkpointing, "atomic_save", slow_save)
    writer = CheckpointWriter()
    for epoch in range(1, 6):  # epoch 1's write starts and blocks; the others queue
        writer.save(tmp_path / "last.pt", {"epoch": epoch, "w": torch.full((4,), float(epoch))}, supersede=True)
        if epoch == 3:
            writer.save(tmp_path / "best.pt", {"epoch": epoch})
    writer.save(tmp_path / "last.pt", {"epoch": 6}, copies={tmp_path / "final.pt": {"final": True}})
    release.set()
    writer.close()
    assert written == [("last.pt", 1), ("best.pt", 3), ("last.pt", 6), ("final.pt", 6)]
    assert torch.load(tmp_path / "final.pt", weights_only=True) == {"epoch": 6, "final": True}
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] == 3
