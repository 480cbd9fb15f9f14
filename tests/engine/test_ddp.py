"""Real multi-process DDP on the CPU (gloo), launched with torchrun."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

from msvmunet.engine.distributed import DistInfo
from msvmunet.engine.trainer import device_batch, setup

from ..conftest import ROOT
from .conftest import quick_config

ENV = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]


def free_port() -> int:
    """A port nothing listens on now (fixed ports collide with other test runs on the same machine)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*TORCHRUN, "--master_port", str(free_port()), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=ENV)


def train_args(data, run_dir, *extra: str) -> list[str]:
    return ["-m", "msvmunet", "train", "--preset", "demo", "--data", str(data), "--output", str(run_dir),
            "--device", "cpu", "--image-size", "32", "--batch-size", "4", *extra]


def test_two_process_ddp_training(tiny_phantom, tmp_path):
    run_dir = tmp_path / "ddp"
    result = torchrun(*train_args(tiny_phantom, run_dir, "--epochs", "2", "--steps-per-epoch", "2",
                                         "--val-cases", "1", "--val-every", "1"))
    assert result.returncode == 0, result.stderr[-3000:]
    # rank 0 alone logs and writes
    assert result.stdout.count("epoch 2 | loss") == 1
    assert "2 process(es)" in result.stdout
    assert result.stdout.count("step: DDP (2 processes), not compiled, eager launches\n") == 1
    ckpt = torch.load(run_dir / "final.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and len(ckpt["history"]) == 2
    assert all(0.0 <= row["val_dice"] <= 1.0 for row in ckpt["history"])
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])  # the DDP wrapper is stripped
    assert not (run_dir / "train.lock").exists()  # rank 0 alone locked the folder, and released it


def test_ddp_step_equals_the_single_process_step_on_the_same_global_batch(tiny_phantom, tmp_path):
    """One step of the trainer in 2 processes against one process with the same global batch of 4.

    Data order: DistributedSampler shuffles with the seed (the same permutation p for any world size)
    and gives rank r the indices p[r::world]. So the single process's first batch p[0:4] is the two
    ranks' first batches p[0], p[2] and p[1], p[3] interleaved: the same global batch, checked here
    on the images themselves. The same seed gives the same initial weights in every process.

    Gradients: DDP averages the ranks' gradients, each from the loss on that rank's half batch. That
    is not the gradient of the loss on the whole batch here: the soft Dice sums over its batch and
    the decoder's BatchNorm normalises with its batch's statistics, both per process. The exact
    statement, checked here, is that DDP's gradient equals the mean of the gradients one process
    computes on the two halves, from the same weights (and its loss, the halves' mean loss).
    """
    out = tmp_path / "ddp"
    result = torchrun("tests/engine/ddp_worker.py", "step", str(tiny_phantom), str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]

    run = setup(quick_config(tiny_phantom, tmp_path / "single", device="cpu", epochs=1, steps_per_epoch=1),
                None, DistInfo())
    batch = next(run.batches(0))
    assert batch["image"].shape[0] == 4
    torch.testing.assert_close(batch["image"][0::2], ranks[0]["images"], rtol=0, atol=0)
    torch.testing.assert_close(batch["image"][1::2], ranks[1]["images"], rtol=0, atol=0)
    torch.testing.assert_close(batch["label"][1::2], ranks[1]["labels"], rtol=0, atol=0)
    model = run.model
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, ranks[0]["initial"][name], rtol=0, atol=0, msg=name)

    model.train()
    grads, losses = {}, []
    for part in ranks:  # the reference: plain forward and backward on each half, in this process
        model.zero_grad(set_to_none=True)
        images, labels = device_batch({"image": part["images"], "label": part["labels"]}, run.device)
        loss = run.criterion(model(images), labels)
        loss.backward()
        losses.append(loss.detach())
        for name, p in model.named_parameters():
            grads[name] = grads.get(name, 0) + p.grad / 2
    torch.testing.assert_close(sum(losses) / 2, (ranks[0]["loss"] + ranks[1]["loss"]) / 2, rtol=1e-5, atol=1e-6)
    assert len(grads) == len(ranks[0]["grads"])
    for name, grad in grads.items():
        assert torch.equal(ranks[0]["grads"][name], ranks[1]["grads"][name]), name  # all-reduced: the same
        torch.testing.assert_close(ranks[0]["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)

    # the step path it printed is the one it took: DDP over gradient buckets, no graph
    for part in ranks:
        assert part["wrapper"] == "DistributedDataParallel" and part["bucket_view"]
        assert part["describe"] == "step: DDP (2 processes), not compiled, eager launches"
    assert result.stdout.count(ranks[0]["describe"] + "\n") == 1


def test_nan_on_one_rank_stops_every_rank(tmp_path):
    """A NaN loss on rank 1 only: both processes stop at the same step (a periodic check, then the
    epoch's end), instead of rank 0 waiting in the next all-reduce for a process that has left."""
    result = torchrun("tests/engine/ddp_worker.py", "nan", str(tmp_path), timeout=200)
    assert result.returncode == 0, result.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    # epoch 1: NaN at step 6 (index 5); checks after steps 4, 8, 12 read the values of the check before,
    # which all-reduced the flag: both stop after step 8. Epoch 2: 6 steps, the check at the end.
    assert [r["steps"] for r in r0] == [r["steps"] for r in r1] == [8, 6]
    assert all(r["error"].startswith("the loss became nan at epoch") for r in r1)
    assert all(r["error"].startswith("the loss became non-finite in another process") for r in r0)


def _worker_pids(parent: int) -> dict[int, int]:
    """rank -> pid of the torchrun workers under ``parent`` (read from /proc)."""
    out = {}
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        ranks = [e for e in env if e.startswith(b"RANK=")]
        if ranks:
            out[int(ranks[0][5:])] = int(child)
    return out


def test_resume_after_a_killed_rank(tiny_phantom, tmp_path):
    """kill -9 of rank 1 mid-training (torchrun then stops rank 0), then --resume on the same folder."""
    run_dir = tmp_path / "run"
    epochs = 8
    args = train_args(tiny_phantom, run_dir, "--epochs", str(epochs), "--steps-per-epoch", "2")
    proc = subprocess.Popen([*TORCHRUN, "--master_port", str(free_port()), *args], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (run_dir / "last.pt").exists():  # at least one epoch done
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.05)
        os.kill(_worker_pids(proc.pid)[1], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, "the run finished before rank 1 was killed"
    killed_after = torch.load(run_dir / "last.pt", weights_only=True)["epoch"]
    assert 1 <= killed_after < epochs

    result = torchrun(*args, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"after epoch {killed_after}" in result.stdout
    ckpt = torch.load(run_dir / "final.pt", weights_only=True)
    assert ckpt["epoch"] == epochs
    assert [row["epoch"] for row in ckpt["history"]] == list(range(1, epochs + 1))
    lrs = [row["lr"] for row in ckpt["history"]]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))  # the cosine schedule continued, not restarted


def test_step_paths_described_without_running_them(tmp_path):
    """The strings for the CUDA paths, from wrapped modules that are never called (no GPU needed):
    torch.compile compiles lazily, and DDP here is a real one over a 1-process gloo group."""
    import torch.distributed as dist

    from msvmunet.engine.distributed import DDP_BUCKET_CAP_MB, wrap_ddp
    from msvmunet import create_model
    from msvmunet.engine.step import CompiledHalves, StepRunner

    model = create_model("nano", num_classes=2)
    opt = torch.optim.AdamW(model.parameters())

    def describe(wrapped, use_graph: bool) -> str:
        return StepRunner(wrapped, None, opt, None, torch.device("cpu"), "fp32", use_graph).describe()

    assert describe(CompiledHalves(model), True) == "step: compiled (encoder and decoder halves), CUDA graph"
    assert describe(model, False) == "step: not compiled, eager launches"
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = wrap_ddp(CompiledHalves(model), torch.device("cpu"))
        assert ddp.gradient_as_bucket_view and ddp.bucket_bytes_cap == int(DDP_BUCKET_CAP_MB * 1024 * 1024)
        assert describe(ddp, False) == "step: DDP (1 process), compiled (encoder and decoder halves), eager launches"
    finally:
        dist.destroy_process_group()
