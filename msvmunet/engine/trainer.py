"""Training: the paper's recipe on one CPU, one GPU or many (torchrun), resumable.

    from msvmunet.engine import resolve_config, train
    run_dir = train(resolve_config("synapse", data="data/synapse", pretrained_encoder="vssm1_...pth"))
"""

from __future__ import annotations

import csv
import dataclasses
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from ..errors import ConfigError, MsvmUnetError
from ..models import MSVMUNet, create_model
from .checkpointing import CheckpointWriter, load_training_checkpoint, training_state
from .config import TrainConfig, save_yaml
from .distributed import DistInfo, all_reduce_mean, barrier, cleanup, init_distributed
from .inference import pick_device, predict_volume, resolve_precision
from .losses import DiceCELoss
from .step import StepRunner, graph_capable


class TrainingError(MsvmUnetError):
    """Training stopped for a reason the user can act on (NaN loss, out of memory)."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str, info: DistInfo) -> torch.device:
    """:func:`pick_device`, with one GPU per torchrun process (its local rank)."""
    dev = pick_device(device)
    if dev.type == "cuda" and (info.enabled or dev.index is None):
        dev = torch.device("cuda", info.local_rank)
    return dev


def is_out_of_memory(err: BaseException) -> bool:
    """A failed allocation: CUDA's torch.OutOfMemoryError, or the CPU allocator's RuntimeError."""
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "can't allocate memory" in str(err))


def out_of_memory_error(device: torch.device, batch_size: int, world_size: int, size: tuple[int, int]) -> TrainingError:
    """The message for a training step that ran out of memory: where, at what batch, what to try."""
    per = batch_size // world_size
    smaller = max(world_size, batch_size // 2)
    return TrainingError(
        f"{device} ran out of memory at {per} images per process ({size[0]}x{size[1]}); "
        f"try --batch-size {smaller}" + (" (or a smaller --image-size)" if smaller == batch_size else "")
    )


def build_model(config: TrainConfig, num_classes: int) -> MSVMUNet:
    if config.pretrained_encoder is None:
        raise ConfigError(
            "the recipe starts from VMamba ImageNet encoder weights: pass --pretrained-encoder PATH "
            "(vssm1_tiny_0230s_ckpt_epoch_264.pth for tiny_0230s) or --pretrained-encoder none to train from scratch"
        )
    pretrained = None if str(config.pretrained_encoder).lower() == "none" else config.pretrained_encoder
    return create_model(
        config.model, num_classes=num_classes, pretrained_encoder=pretrained,
        scan_backend=config.scan_backend, **config.model_options,
    )


class _History:
    """Per-epoch scalars: a CSV file always, TensorBoard when it is installed."""

    def __init__(self, run_dir: Path, enabled: bool, rows: list[dict]) -> None:
        self.rows = rows
        self.path = run_dir / "history.csv"
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                print("TensorBoard is not installed; scalars go to history.csv only "
                      "(pip install 'msvm-unet[viz]' for TensorBoard)")
        self.enabled = enabled

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if not self.enabled:
            return
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)) and value == value:
                    self.writer.add_scalar(key, value, row["epoch"])
            self.writer.flush()
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.rows)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _mean_dice(model, volumes, num_classes: int, config: TrainConfig, info: DistInfo, device) -> float:
    """Mean Dice over classes 1.. (paper rule per case), cases spread over the processes."""
    from ..metrics import evaluate_case

    totals = torch.zeros(2, num_classes - 1, dtype=torch.float64)
    for i, volume in enumerate(volumes):
        if i % info.world_size != info.rank:
            continue
        pred = predict_volume(model, volume.image, size=config.image_size, batch_size=config.eval_batch_size,
                              precision=config.precision)
        results = evaluate_case(pred, volume.label, num_classes, protocol="paper", distances=False)
        totals[0] += torch.tensor([r.dice for r in results], dtype=torch.float64)
        totals[1] += 1
    if info.enabled:
        import torch.distributed as dist

        totals = totals.to(device)
        dist.all_reduce(totals)
        totals = totals.cpu()
    per_class = totals[0] / totals[1].clamp_min(1)
    return float(per_class.mean())


def train(config: TrainConfig, *, resume: str | Path | bool | None = None) -> Path:
    """Train with ``config``; returns the run folder (``config.output``).

    ``resume``: a checkpoint path, or True for ``<output>/last.pt``. The run folder receives
    ``config.yaml`` (the resolved configuration), ``last.pt`` every epoch (atomic), ``final.pt``,
    ``best.pt`` when a validation selects one, ``history.csv`` and TensorBoard scalars.
    """
    info = init_distributed("cuda" if config.device != "cpu" and torch.cuda.is_available() else "cpu")
    try:
        return _train(config, resume, info)
    finally:
        cleanup(info)


def _train(config: TrainConfig, resume, info: DistInfo) -> Path:
    from ..data import Augmenter, AugmentConfig, check_training_data, normalize, open_dataset, split_cases

    device = resolve_device(config.device, info)
    precision = resolve_precision(config.precision, device)
    config = config.replace(precision=precision)
    run_dir = Path(config.output)
    if config.batch_size % info.world_size:
        raise ConfigError(f"batch size {config.batch_size} must be divisible by the {info.world_size} processes")
    seed_everything(config.seed)

    # data ----------------------------------------------------------------------------------
    data = open_dataset(config.data, config.dataset)
    check_training_data(data, test_split=config.select_on_test, progress=info.is_main)  # before the run folder
    cases = data.cases("train")
    val_spec = config.val_cases
    train_cases, val_cases = split_cases(cases, val_spec, seed=config.seed) if val_spec else (cases, [])
    if config.select_on_test and val_cases:
        raise ConfigError("choose one way of selecting the checkpoint: --val-cases or --select-on-test")
    dataset = data.slices("train", cases=train_cases, size=config.image_size)
    sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=config.seed)
    use_graph = config.cuda_graph and graph_capable(device, info.world_size, precision)
    # a captured training step needs one batch shape: then the last partial batch of an epoch is dropped
    drop_last = use_graph and len(dataset) >= config.batch_size
    loader = DataLoader(
        dataset, batch_size=config.batch_size // info.world_size, sampler=sampler,
        num_workers=config.num_workers, pin_memory=device.type == "cuda",
        persistent_workers=config.num_workers > 0, drop_last=drop_last,
    )
    num_classes = data.num_classes
    augmenter = Augmenter(AugmentConfig(mode=config.noise)) if config.augment else None

    # model, optimiser ------------------------------------------------------------------------
    model = build_model(config, num_classes).to(device)
    criterion = DiceCELoss(config.ce_weight, config.dice_weight)
    if config.compile and device.type == "cuda":  # the torch form (no Triton) fuses; the Triton form is two kernels either way
        criterion = torch.compile(criterion, options=config.inductor or None)
    # a CUDA graph bakes in plain numbers: the learning rate lives in a tensor the scheduler updates in place
    lr = torch.tensor(config.lr, device=device) if use_graph else config.lr
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=config.betas, eps=config.eps,
                                  weight_decay=config.weight_decay, fused=device.type == "cuda",
                                  capturable=use_graph)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.min_lr)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    start_epoch, history_rows, best = 0, [], None
    if resume:
        path = run_dir / "last.pt" if resume is True else Path(resume)
        state = load_training_checkpoint(path, model.config)
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:  # a plain number or a device tensor, as this run needs
            value = float(group["lr"])
            group["lr"] = torch.tensor(value, device=device) if use_graph else value
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        from .checkpointing import set_rng_state

        set_rng_state(state["rng"])
        start_epoch, history_rows, best = state["epoch"], list(state.get("history") or []), state.get("best")
        if info.is_main:
            print(f"resuming {path} after epoch {start_epoch}")
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_yaml(config, run_dir / "config.yaml")
    history = _History(run_dir, info.is_main, history_rows)
    preprocessing = dataclasses.replace(data.preprocessing, size=config.image_size)
    ckpt_extra = dict(train_config=config.to_dict(), preprocessing=preprocessing.to_dict(),
                      classes=list(data.class_names))

    if config.select_on_test:
        selection_split, selection_cases = "test", None
        selection_note = "selected on the TEST set (the paper's protocol): test metrics of this checkpoint are optimistic"
    elif val_cases:
        selection_split, selection_cases = "train", val_cases
        selection_note = f"selected on validation cases held out of training: {', '.join(val_cases)}"
    else:
        selection_split = None
        selection_note = "final epoch (no selection)"

    frozen = None
    runner = None
    writer = CheckpointWriter()
    try:
        steps_per_epoch = len(loader) if config.steps_per_epoch is None else min(len(loader), config.steps_per_epoch)
        if info.is_main:
            print(f"training {config.model} on {len(dataset)} slices of {len(train_cases)} cases, "
                  f"{num_classes} classes, {steps_per_epoch} steps x {config.epochs} epochs, {device}, {precision}, "
                  f"{info.world_size} process(es)")

        for epoch in range(start_epoch, config.epochs):
            # the encoder is frozen for the first epochs; DDP is rebuilt when the trainable set changes
            want_frozen = epoch < config.freeze_encoder_epochs
            if want_frozen != frozen:
                model.encoder.requires_grad_(not want_frozen)
                frozen = want_frozen
                wrapped = model
                if info.enabled:
                    wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
                if config.compile and device.type == "cuda":
                    wrapped = torch.compile(wrapped, options=config.inductor or None)
                runner = StepRunner(wrapped, criterion, optimizer, scaler, device, precision, use_graph)
            sampler.set_epoch(epoch)
            model.train()
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=device, dtype=torch.float64)
            steps = 0
            progress = _progress(loader, steps_per_epoch, f"epoch {epoch + 1}/{config.epochs}", info.is_main)
            for step, batch in enumerate(progress):
                if step >= steps_per_epoch:
                    break
                images = batch["image"].to(device, non_blocking=True)
                labels = batch["label"].to(device, non_blocking=True)
                if augmenter is not None:
                    generator = torch.Generator(device=device).manual_seed(
                        hash((config.seed, epoch, step, info.rank)) % 2**63)
                    images, labels = augmenter(images, labels, generator=generator)
                images = normalize(images)
                try:
                    loss = runner(images, labels)
                except RuntimeError as err:  # torch.OutOfMemoryError is one
                    if not is_out_of_memory(err):
                        raise
                    raise out_of_memory_error(device, config.batch_size, info.world_size,
                                              tuple(images.shape[-2:])) from None
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"the loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; training stopped. "
                        f"The last good checkpoint is {run_dir / 'last.pt'} (after epoch {epoch}). "
                        "Try a lower --lr, or --precision fp32."
                    )
                loss_sum += loss.detach()
                steps += 1
                if info.is_main and hasattr(progress, "set_postfix"):
                    progress.set_postfix(loss=f"{loss.item():.4f}")
            mean_loss = all_reduce_mean(loss_sum / max(steps, 1), info).item()
            lr = float(optimizer.param_groups[0]["lr"])
            scheduler.step()
            row: dict[str, Any] = {"epoch": epoch + 1, "loss": mean_loss, "lr": lr,
                                   "seconds": time.perf_counter() - t0, "encoder_frozen": int(frozen)}

            last_epoch = epoch + 1 == config.epochs
            if selection_split and ((epoch + 1) % config.val_every == 0 or last_epoch):
                volumes = list(data.volumes(selection_split, cases=selection_cases))
                dice = _mean_dice(model, volumes, num_classes, config, info, device)
                row["val_dice" if selection_split == "train" else "test_dice_for_selection"] = dice
                if best is None or dice > best["dice"]:
                    best = {"dice": dice, "epoch": epoch + 1}
                    if info.is_main:
                        writer.save(run_dir / "best.pt", training_state(
                            model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, epoch=epoch + 1,
                            history=history.rows + [row], best=best,
                            selection=f"best mean Dice {dice:.4f} at epoch {epoch + 1}; {selection_note}", **ckpt_extra))
            history.add(row)
            if info.is_main:
                state = training_state(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                                       epoch=epoch + 1, history=history.rows, best=best, selection=f"epoch {epoch + 1}",
                                       **ckpt_extra)
                writer.save(run_dir / "last.pt", state)
                if last_epoch:
                    writer.save(run_dir / "final.pt", dict(state, selection=f"final epoch {epoch + 1}"))
                print(" | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
            barrier(info)
    finally:
        writer.close()  # the last checkpoint is complete on disk before returning or raising
        history.close()
    return run_dir


def _progress(loader, total: int, desc: str, enabled: bool):
    if not enabled:
        return loader
    from tqdm import tqdm

    return tqdm(loader, total=total, desc=desc, leave=False, dynamic_ncols=True)
