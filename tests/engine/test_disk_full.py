"""A full disk during evaluate's and predict's writes: one line naming the full folder and the space needed;
the files written before stay whole. A writer stub raising ENOSPC, and a real small tmpfs where one can be
mounted (root)."""

from __future__ import annotations

import errno
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from msvmunet._files import atomic_write, atomic_write_text, is_disk_full
from msvmunet.cli import main
from msvmunet.data import make_phantom
from msvmunet.errors import DiskFullError
from msvmunet.engine import train

from .conftest import quick_config

TORCH_ERROR = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")


def test_a_writer_stopped_by_enospc_names_the_folder_and_size_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "reports" / "summary.json"
    atomic_write_text(target, "old and whole")

    def write(f):
        f.write(b"x" * 3000)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFullError) as info:
        atomic_write(target, write, size=5 * 2**20)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{target.parent}: the disk is full")
    assert "summary.json" in message and "5.0 MB needed" in message and "free" in message
    assert target.read_text() == "old and whole"
    assert [p.name for p in target.parent.iterdir()] == ["summary.json"]  # the partial file is gone
    with pytest.raises(DiskFullError, match="more than 3 KB needed"):  # size unknown: what was written
        atomic_write(tmp_path / "other.bin", write)


def test_disk_full_is_recognised_however_the_writer_wraps_it(tmp_path):
    assert is_disk_full(OSError(errno.ENOSPC, "x")) and is_disk_full(OSError(errno.EDQUOT, "x"))
    assert is_disk_full(OSError("Can't write data (file write failed: errno = 28, error message = "
                                "'No space left on device')"))  # h5py's wording
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    # PyTorch's zip writer says only this; the folder's free space decides
    if shutil.disk_usage(tmp_path).free > 2**30:
        assert not is_disk_full(TORCH_ERROR, tmp_path)
    assert not is_disk_full(TORCH_ERROR)  # no folder to look at


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom_disk")
    make_phantom(root, cases=4, test_cases=2, size=32, slices=6, seed=4)
    run = train(quick_config(root, tmp_path_factory.mktemp("run") / "run", epochs=1, steps_per_epoch=1))
    return root, run / "final.pt"


def test_predict_with_the_disk_full_stops_in_one_line_and_keeps_what_it_wrote(checkpoint, tmp_path, monkeypatch,
                                                                              capsys):
    root, ckpt = checkpoint
    scans = tmp_path / "scans"
    for i in range(3):
        scans.mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(np.random.default_rng(i).uniform(-200, 300, (32, 32, 4)).astype(np.float32),
                                 np.diag([0.8, 0.8, 3.0, 1.0])), str(scans / f"s{i}.nii.gz"))
    out = tmp_path / "out"
    real_save, calls = nib.save, []

    def save_until_full(image, filename):  # the second file finds the disk full after writing part of it
        calls.append(filename)
        if len(calls) == 2:
            with open(filename, "wb") as f:
                f.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(image, filename)

    monkeypatch.setattr(nib, "save", save_until_full)
    assert main(["predict", str(scans), "-o", str(out), "--checkpoint", str(ckpt), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"msvmunet predict: error: {out}: the disk is full") and "s1_seg.nii.gz" in err
    assert sorted(p.name for p in out.iterdir()) == ["s0_seg.nii.gz"]  # whole, and no partial file
    assert nib.load(str(out / "s0_seg.nii.gz")).get_fdata().shape == (32, 32, 4)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 96 KB file system of its own (needs root; skipped otherwise)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_evaluate_on_a_full_tmpfs_stops_in_one_line_and_keeps_what_it_wrote(checkpoint, small_tmpfs, capsys):
    root, ckpt = checkpoint
    (small_tmpfs / "notes.txt").write_text("kept")
    ballast = small_tmpfs / "ballast"
    ballast.write_bytes(b"\0" * 60 * 1024)  # leaves too little room for every report
    assert is_disk_full(TORCH_ERROR, small_tmpfs)  # torch.save's message, where the space is short
    code = main(["evaluate", "--checkpoint", str(ckpt), "--data", str(root), "-o", str(small_tmpfs / "eval"),
                 "--device", "cpu", "--overlays", "2"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    (line,) = [line for line in err.splitlines() if "error:" in line]
    assert line.startswith(f"msvmunet evaluate: error: {small_tmpfs / 'eval'}") and "the disk is full" in line
    assert "needed" in line and "free" in line
    assert (small_tmpfs / "notes.txt").read_text() == "kept"
    written = [p for p in (small_tmpfs / "eval").rglob("*") if p.is_file()]
    assert not [p for p in written if p.name.startswith(".tmp-")]
    for png in [p for p in written if p.suffix == ".png"]:
        with Image.open(png) as image:
            image.load()  # whole files only
