"""The training loop waits for no device value per step; the end-to-end benchmark reports every phase."""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from msvmunet.engine.benchmark import PHASE_COLUMNS, benchmark_training, training_table
from msvmunet.engine.distributed import DistInfo
from msvmunet.engine.epoch import LossWatch, TrainingError, run_epoch
from msvmunet.engine.trainer import setup, step_runner, train_epoch

from .conftest import quick_config

# calls that bring a tensor's value to the host: on a GPU each one waits for the device
READS = {"item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__", "copy_"}


class CountReads(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.paused = False  # inside the training step itself (on CPU, AdamW reads its step counts)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if not self.paused and getattr(func, "__name__", "") in READS:
            self.count += 1
        return func(*args, **(kwargs or {}))


def _epoch_reads(tiny_phantom, tmp_path, steps: int, sabotage: bool) -> int:
    config = quick_config(tiny_phantom, tmp_path, batch_size=2, steps_per_epoch=steps, augment=True)
    run = setup(config, None, DistInfo())
    plain = step_runner(run, frozen=False)
    counter = CountReads()

    def runner(images, labels):
        counter.paused = True
        try:
            loss = plain(images, labels)
        finally:
            counter.paused = False
        if sabotage:  # a loop that looks at the loss every step, as a progress bar showing it would
            loss.item()
        return loss

    with counter:
        train_epoch(run, runner, epoch=0)
    return counter.count


def test_the_loop_reads_no_device_value_per_step(tiny_phantom, tmp_path):
    steps = 8  # LossWatch looks every 25 steps: here only at the end of the epoch
    reads = _epoch_reads(tiny_phantom, tmp_path / "a", steps, sabotage=False)
    assert reads <= 4, f"{reads} host reads in an epoch of {steps} steps"
    # the count sees a read per step when there is one
    assert _epoch_reads(tiny_phantom, tmp_path / "b", steps, sabotage=True) >= steps


def test_loss_watch_finds_the_first_bad_step_and_the_mean():
    losses = [torch.tensor(v) for v in (1.0, 3.0, float("nan"), 2.0, float("inf"))]
    watch = LossWatch(torch.device("cpu"), check_every=2)
    for i, loss in enumerate(losses[:2]):
        watch.add(loss, i)
    values, fresh = watch.poll()
    assert fresh and values[:3] == [4.0, 2.0, -1.0]
    for i, loss in enumerate(losses[2:], start=2):
        watch.add(loss, i)
    final = watch.final()
    assert final[2] == 2 and final[3] != final[3]  # the first bad step, and its value (NaN)


def test_run_epoch_stops_at_a_non_finite_loss_and_names_the_step():
    batches = [{"x": torch.zeros(1)} for _ in range(10)]
    losses = iter([0.5, 0.4, float("nan")] + [0.3] * 7)
    with pytest.raises(TrainingError, match=r"the loss became nan at epoch 4, step 3.*last\.pt \(after epoch 3\)"):
        run_epoch(batches, 10, prepare=lambda b, i: (b["x"], b["x"]), step=lambda x, y: torch.tensor(next(losses)),
                  device=torch.device("cpu"), epoch=3, last_good="last.pt (after epoch 3)", check_every=2)
    result = run_epoch(batches, 4, prepare=lambda b, i: (b["x"], b["x"]), step=lambda x, y: torch.tensor(2.0),
                       device=torch.device("cpu"), epoch=0, last_good="-")
    assert result.steps == 4 and result.loss == 2.0 and set(result.phases) == {"data", "augment", "copy", "step"}


def test_end_to_end_benchmark_reports_every_phase(tiny_phantom, tmp_path):
    rows = benchmark_training(str(tiny_phantom), output=str(tmp_path / "run"), frozen_epochs=1, train_epochs=1,
                              preset="demo", image_size=32, batch_size=4, steps_per_epoch=2)
    assert [r["encoder_frozen"] for r in rows] == [1, 0]
    for row in rows:
        assert row["images"] == 8 and row["seconds"] > 0
        assert all(row[key] >= 0 for key, _ in PHASE_COLUMNS)
    table = training_table(rows)
    assert all(name in table for _, name in PHASE_COLUMNS) and "frozen" in table and "training" in table
    assert (tmp_path / "run" / "last.pt").is_file()  # a real run: checkpoints written


def test_benchmark_command_with_data(tiny_phantom, tmp_path, capsys):
    from msvmunet.cli import main

    code = main(["benchmark", "--data", str(tiny_phantom), "--preset", "demo", "--size", "32", "--batch", "4",
                 "--frozen-epochs", "0", "--train-epochs", "1", "--steps-per-epoch", "2", "--num-workers", "0",
                 "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    assert "data wait" in out and "checkpoint" in out and "| training |" in out
