"""Launched by test_ddp.py under torchrun (gloo, CPU): the trainer's own parts in several processes.

``python -m torch.distributed.run --nproc_per_node 2 tests/engine/ddp_worker.py MODE DATA OUT``; each
process writes ``OUT/rank<r>.pt``.

step: one training step (setup, step_runner, the first batch of epoch 0): the batch, the loss, the
      initial weights, the gradients after DDP's all-reduce and the step path the runner describes.
nan:  two epochs of run_epoch whose steps all-reduce a tensor as DDP's backward does, with a NaN loss
      on rank 1 only (at a periodic check, then at the epoch end): where each process stopped, and why.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist


def one_step(data: str, out: Path) -> None:
    from msvmunet.engine.distributed import cleanup, init_distributed
    from msvmunet.engine.trainer import device_batch, setup, step_runner
    from tests.engine.conftest import quick_config

    info = init_distributed("cpu")
    out.mkdir(parents=True, exist_ok=True)  # setup writes nothing (train() writes the run folder)
    run = setup(quick_config(data, out / "run", device="cpu", epochs=1, steps_per_epoch=1), None, info)
    initial = {k: v.clone() for k, v in run.model.state_dict().items()}
    runner = step_runner(run, frozen=False)
    batch = next(run.batches(0))
    run.model.train()
    loss = runner(*device_batch(batch, run.device))
    ddp = runner.model
    torch.save(dict(images=batch["image"], labels=batch["label"], loss=loss, initial=initial,
                    describe=runner.describe(), wrapper=type(ddp).__name__,
                    bucket_view=ddp.gradient_as_bucket_view, bucket_bytes=ddp.bucket_bytes_cap,
                    grads={n: p.grad.clone() for n, p in run.model.named_parameters()}),
               out / f"rank{info.rank}.pt")
    cleanup(info)


def nan_epochs(out: Path) -> None:
    from msvmunet.engine.distributed import DistInfo, all_reduce_max_
    from msvmunet.engine.epoch import TrainingError, run_epoch

    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank, world = dist.get_rank(), dist.get_world_size()
    info = DistInfo(rank, rank, world)
    results = []
    for epoch, (steps, bad_step) in enumerate([(12, 5), (6, 5)]):  # checks at steps 3, 7, 11 / at the end only
        done = []

        def step(images, labels):
            grads = torch.ones(3)
            dist.all_reduce(grads)  # as DDP's backward: a process that stopped leaves the others waiting here
            done.append(len(done))
            bad = rank == 1 and done[-1] == bad_step
            return torch.tensor(float("nan") if bad else 1.0)

        try:
            run_epoch(range(steps), steps, prepare=lambda b, i: (torch.zeros(1), torch.zeros(1)), step=step,
                      device=torch.device("cpu"), epoch=epoch, last_good="last.pt", check_every=4,
                      agree=lambda flag: all_reduce_max_(flag, info))
            results.append(dict(steps=len(done), error=None))
        except TrainingError as err:
            results.append(dict(steps=len(done), error=str(err)))
    torch.save(results, out / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    mode, rest = sys.argv[1], sys.argv[2:]
    if mode == "step":
        one_step(rest[0], Path(rest[1]))
    else:
        nan_epochs(Path(rest[-1]))
