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
from torch.utils.data import DataLoader, DistributedSampler

from ..errors import ConfigError
from ..models import MSVMUNet, create_model
from .checkpointing import CheckpointWriter, load_training_checkpoint, training_state
from .config import TrainConfig
from .distributed import DistInfo, all_reduce_max_, all_reduce_mean, barrier, cleanup, init_distributed, wrap_ddp
from .inference import pick_device, predict_volume, resolve_precision
from .epoch import TrainingError, run_epoch
from .losses import DiceCELoss
from .run_folder import open_run_folder
from .step import CompiledHalves, StepRunner, graph_capable


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


def build_model(config: TrainConfig, num_classes: int, in_channels: int = 3) -> MSVMUNet:
    if config.pretrained_encoder is None:
        raise ConfigError(
            "the recipe starts from VMamba ImageNet encoder weights: pass --pretrained-encoder PATH "
            "(vssm1_tiny_0230s_ckpt_epoch_264.pth for tiny_0230s) or --pretrained-encoder none to train from scratch"
        )
    pretrained = None if str(config.pretrained_encoder).lower() == "none" else config.pretrained_encoder
    return create_model(
        config.model, num_classes=num_classes, in_channels=in_channels, pretrained_encoder=pretrained,
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


@dataclasses.dataclass
class Selection:
    """How the checkpoint reported as best is chosen: on which volumes, and what reports say about it."""

    split: str | None          # None: no selection (the final epoch is reported)
    cases: list[str] | None
    note: str
    key: str = "val_dice"


@dataclasses.dataclass
class Run:
    """Everything one training run holds once set up."""

    config: TrainConfig
    info: DistInfo
    device: torch.device
    run_dir: Path
    data: Any
    num_classes: int
    loader: DataLoader
    sampler: BatchKeys
    steps_per_epoch: int
    model: MSVMUNet
    criterion: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    use_graph: bool
    selection: Selection
    ckpt_extra: dict[str, Any]
    start_epoch: int = 0
    history_rows: list[dict] = dataclasses.field(default_factory=list)
    best: dict | None = None
    next_batches: Any = None  # the next epoch's batches, already loading

    def batches(self, epoch: int):
        """The loader's iterator for ``epoch`` (started early by :meth:`start_loading`, or now)."""
        batches, self.next_batches = self.next_batches, None
        if batches is None:
            self.sampler.set_epoch(epoch)
            batches = iter(self.loader)
        return batches

    def start_loading(self, epoch: int) -> None:
        """Let the workers start on ``epoch``'s batches (the current epoch's are all taken)."""
        if epoch < self.config.epochs and self.loader.num_workers > 0:
            self.sampler.set_epoch(epoch)
            self.next_batches = iter(self.loader)


def train(config: TrainConfig, *, resume: str | Path | bool | None = None, force: bool = False) -> Path:
    """Train with ``config``; returns the run folder (``config.output``).

    ``resume``: a checkpoint path, or True for ``<output>/last.pt``; ``force``: replace the run the
    folder holds (otherwise refused; see :mod:`.run_folder`). The run folder receives
    ``config.yaml`` (the resolved configuration), ``last.pt`` every epoch (atomic), ``final.pt``,
    ``best.pt`` when a validation selects one, ``history.csv`` (per epoch: loss, learning rate, and
    where the time went) and TensorBoard scalars.
    """
    info = init_distributed("cuda" if config.device != "cpu" and torch.cuda.is_available() else "cpu")
    try:
        with open_run_folder(config, info, resume=resume, force=force) as folder:
            run = setup(config, resume, info)
            folder.start(run.config, run.model)  # config.yaml; a replaced run's files removed
            return train_run(run)
    finally:
        cleanup(info)


# ---------------------------------------------------------------------------------------- setup

def setup(config: TrainConfig, resume, info: DistInfo) -> Run:
    """Data, model, optimiser and selection of a run, restored from a checkpoint when resuming
    (nothing is written: the caller writes ``config.yaml`` once this has succeeded)."""
    device = resolve_device(config.device, info)
    precision = resolve_precision(config.precision, device)
    config = config.replace(precision=precision)
    if config.batch_size % info.world_size:
        raise ConfigError(f"batch size {config.batch_size} must be divisible by the {info.world_size} processes")
    seed_everything(config.seed)
    use_graph = config.cuda_graph and graph_capable(device, info.world_size, precision)
    data, train_cases, selection = _open_data(config, info)
    loader, sampler = _loader(data, train_cases, config, info, device, use_graph)
    steps = len(loader) if config.steps_per_epoch is None else min(len(loader), config.steps_per_epoch)
    model = build_model(config, data.num_classes, data.preprocessing.model_channels).to(device)
    criterion = DiceCELoss(config.ce_weight, config.dice_weight)
    if config.compile and device.type == "cuda":  # the torch form (no Triton) fuses; the Triton form is two kernels either way
        from .compiling import use_compile_caches

        use_compile_caches()
        criterion = torch.compile(criterion, options=config.inductor or None)
    # a CUDA graph bakes in plain numbers: the learning rate lives in a tensor the scheduler updates in place
    lr = torch.tensor(config.lr, device=device) if use_graph else config.lr
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=config.betas, eps=config.eps,
                                  weight_decay=config.weight_decay, fused=device.type == "cuda",
                                  capturable=use_graph)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.min_lr)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    preprocessing = dataclasses.replace(data.preprocessing, size=config.image_size)
    run = Run(config=config, info=info, device=device, run_dir=Path(config.output), data=data,
              num_classes=data.num_classes, loader=loader, sampler=sampler, steps_per_epoch=steps,
              model=model, criterion=criterion, optimizer=optimizer, scheduler=scheduler,
              scaler=scaler, use_graph=use_graph, selection=selection,
              ckpt_extra=dict(train_config=config.to_dict(), preprocessing=preprocessing.to_dict(),
                              classes=list(data.class_names)))
    if resume:
        _restore(run, run.run_dir / "last.pt" if resume is True else Path(resume))
    if info.is_main:
        print(f"training {config.model} on {len(loader.dataset.slices)} slices of {len(train_cases)} cases, "
              f"{run.num_classes} classes, {steps} steps x {config.epochs} epochs, {device}, {precision}, "
              f"{info.world_size} process(es)")
    return run


def _open_data(config: TrainConfig, info: DistInfo):
    """The dataset, the training cases, and how the checkpoint is selected."""
    from ..data import check_training_data, open_dataset, split_cases

    data = open_dataset(config.data, config.dataset)
    check_training_data(data, test_split=config.select_on_test, progress=info.is_main)  # before the run folder
    cases = data.cases("train")
    train_cases, val_cases = split_cases(cases, config.val_cases, seed=config.seed) if config.val_cases else (cases, [])
    if config.select_on_test and val_cases:
        raise ConfigError("choose one way of selecting the checkpoint: --val-cases or --select-on-test")
    if config.select_on_test:
        selection = Selection("test", None, "selected on the TEST set (the paper's protocol): test metrics of "
                              "this checkpoint are optimistic", key="test_dice_for_selection")
    elif val_cases:
        selection = Selection("train", val_cases, f"selected on validation cases held out of training: "
                              f"{', '.join(val_cases)}")
    elif "val" in data.splits:  # the dataset's own validation split (SSL4MIS val.list, image-folder val/)
        selection = Selection("val", None, "selected on the dataset's validation split")
    else:
        selection = Selection(None, None, "final epoch (no selection)")
    return data, train_cases, selection


def _loader(data, train_cases, config: TrainConfig, info: DistInfo, device: torch.device, use_graph: bool):
    """Whole batches, read, resized and augmented in the loader's workers (:mod:`msvmunet.data.batches`)."""
    from ..data import AugmentConfig, AugmentedBatches, Augmenter, BatchKeys

    slices = data.slices("train", cases=train_cases, size=config.image_size)
    augmenter = Augmenter(AugmentConfig(mode=config.noise)) if config.augment else None
    order = DistributedSampler(slices, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=config.seed)
    # a captured training step needs one batch shape: then the last partial batch of an epoch is dropped
    batch = config.batch_size // info.world_size
    keys = BatchKeys(order, batch, drop_last=use_graph and len(order) >= batch)
    workers = config.num_workers
    loader = DataLoader(
        AugmentedBatches(slices, augmenter, seed=config.seed, rank=info.rank), sampler=keys, batch_size=None,
        num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
        prefetch_factor=2 if workers > 0 else None,
    )
    return loader, keys


def _restore(run: Run, path: Path) -> None:
    """Model, optimiser, schedule, random state and history from a training checkpoint."""
    from .checkpointing import set_rng_state

    state = load_training_checkpoint(path, run.model.config)
    run.model.load_state_dict(state["state_dict"])
    run.optimizer.load_state_dict(state["optimizer"])
    for group in run.optimizer.param_groups:  # a plain number or a device tensor, as this run needs
        value = float(group["lr"])
        group["lr"] = torch.tensor(value, device=run.device) if run.use_graph else value
    run.scheduler.load_state_dict(state["scheduler"])
    run.scheduler.T_max = run.config.epochs  # a changed --epochs: anneal from here to min_lr at the new end
    if run.scaler is not None and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    run.start_epoch, run.history_rows, run.best = state["epoch"], list(state.get("history") or []), state.get("best")
    if run.info.is_main:
        print(f"resuming {path} after epoch {run.start_epoch}")


# ---------------------------------------------------------------------------------------- the loop

def train_run(run: Run) -> Path:
    """The epochs of a set-up run: train, select, checkpoint; returns the run folder."""
    config = run.config
    history = _History(run.run_dir, run.info.is_main, run.history_rows)
    writer = CheckpointWriter()
    run.loader = writer.watch(run.loader)  # a failed checkpoint write stops training at the next batch
    runner, frozen = None, None
    try:
        for epoch in range(run.start_epoch, config.epochs):
            t0 = time.perf_counter()
            want_frozen = epoch < config.freeze_encoder_epochs
            if want_frozen != frozen:  # the encoder is frozen for the first epochs
                runner, frozen = step_runner(run, frozen=want_frozen), want_frozen
            row = train_epoch(run, runner, epoch)
            row["encoder_frozen"] = int(frozen)
            t = time.perf_counter()
            validate(run, epoch, row, history, writer)
            row["val_s"] = time.perf_counter() - t
            t = time.perf_counter()
            save_epoch(run, epoch, row, history, writer)
            row["checkpoint_s"] = time.perf_counter() - t
            row["seconds"] = time.perf_counter() - t0
            history.add(row)
            if run.info.is_main:
                print(format_row(row))
            barrier(run.info)
    finally:
        writer.close()  # the last checkpoint is complete on disk before returning or raising
        history.close()
    return run.run_dir


def step_runner(run: Run, *, frozen: bool) -> StepRunner:
    """A training step for the current trainable set (DDP and the compiled model rebuilt when it changes);
    prints the step path it takes."""
    run.model.freeze_encoder(frozen)
    wrapped: torch.nn.Module = run.model
    if run.config.compile and run.device.type == "cuda":
        wrapped = CompiledHalves(wrapped, options=run.config.inductor)
    if run.info.enabled:
        wrapped = wrap_ddp(wrapped, run.device)
    runner = StepRunner(wrapped, run.criterion, run.optimizer, run.scaler, run.device, run.config.precision,
                        run.use_graph)
    if run.info.is_main:
        print(runner.describe() + (" (encoder frozen)" if frozen else ""))
    return runner


def device_batch(batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch from the loader on ``device``: the images normalised, the labels int64 (they travel
    from the workers as uint8 when the classes fit)."""
    from ..data import normalize

    images = batch["image"].to(device, non_blocking=True)
    labels = batch["label"].to(device, non_blocking=True).long()
    return normalize(images), labels


def train_epoch(run: Run, runner: StepRunner, epoch: int) -> dict[str, Any]:
    """One pass over the training slices; the row of numbers it adds to the history."""
    config, info, device = run.config, run.info, run.device
    batches = run.batches(epoch)
    run.model.train()

    def prepare(batch: dict, step: int):  # the batch comes augmented from the loader's workers
        return device_batch(batch, device)

    def step(images, labels):
        try:
            return runner(images, labels)
        except RuntimeError as err:  # torch.OutOfMemoryError is one
            if not is_out_of_memory(err):
                raise
            raise out_of_memory_error(device, config.batch_size, info.world_size, tuple(images.shape[-2:])) from None

    bar = _progress(batches, run.steps_per_epoch, f"epoch {epoch + 1}/{config.epochs}", info.is_main)
    show = (lambda loss: bar.set_postfix(loss=f"{loss:.4f}", refresh=False)) if hasattr(bar, "set_postfix") else None
    t = time.perf_counter()
    try:
        result = run_epoch(bar, run.steps_per_epoch, prepare=prepare, step=step, device=device, epoch=epoch,
                           last_good=f"{run.run_dir / 'last.pt'} (after epoch {epoch})", progress=show,
                           after_last_batch=lambda: run.start_loading(epoch + 1),
                           agree=(lambda flag: all_reduce_max_(flag, info)) if info.enabled else None)
    finally:
        if hasattr(bar, "close"):
            bar.close()
    seconds = time.perf_counter() - t
    loss = torch.tensor(result.loss, dtype=torch.float64, device=device)
    row: dict[str, Any] = {"epoch": epoch + 1, "loss": all_reduce_mean(loss, info).item(),
                           "lr": float(run.optimizer.param_groups[0]["lr"])}
    run.scheduler.step()
    images = result.steps * config.batch_size
    row.update(images=images, train_s=seconds, images_per_s=images / seconds if seconds > 0 else float("nan"),
               **{f"{phase}_s": value for phase, value in result.phases.items()})
    return row


def validate(run: Run, epoch: int, row: dict, history: "_History", writer: CheckpointWriter) -> None:
    """Every ``val_every`` epochs (and at the end): mean Dice on the selection volumes; keep the best."""
    selection, config = run.selection, run.config
    last_epoch = epoch + 1 == config.epochs
    if selection.split is None or not ((epoch + 1) % config.val_every == 0 or last_epoch):
        return
    volumes = list(run.data.volumes(selection.split, cases=selection.cases))
    dice = _mean_dice(run.model, volumes, run.num_classes, config, run.info, run.device)
    row[selection.key] = dice
    if run.best is None or dice > run.best["dice"]:
        run.best = {"dice": dice, "epoch": epoch + 1}
        if run.info.is_main:
            writer.save(run.run_dir / "best.pt", _state(
                run, epoch, history.rows + [row],
                selection=f"best mean Dice {dice:.4f} at epoch {epoch + 1}; {selection.note}"))


def save_epoch(run: Run, epoch: int, row: dict, history: "_History", writer: CheckpointWriter) -> None:
    """``last.pt`` after every epoch (in the background; see :class:`CheckpointWriter`), ``final.pt`` after
    the last (main process only)."""
    if not run.info.is_main:
        return
    state = _state(run, epoch, history.rows + [row], selection=f"epoch {epoch + 1}")
    final = epoch + 1 == run.config.epochs
    writer.save(run.run_dir / "last.pt", state,
                copies={run.run_dir / "final.pt": {"selection": f"final epoch {epoch + 1}"}} if final else None,
                supersede=not final)  # a disk slower than the epochs skips to the newest last.pt


def _state(run: Run, epoch: int, history: list[dict], **extra: Any) -> dict[str, Any]:
    return training_state(model=run.model, optimizer=run.optimizer, scheduler=run.scheduler, scaler=run.scaler,
                          epoch=epoch + 1, history=history, best=run.best, **run.ckpt_extra, **extra)


def format_row(row: dict[str, Any]) -> str:
    """One epoch's line of output: loss, learning rate, images/s and where the time went."""
    parts = [f"epoch {row['epoch']}", f"loss {row['loss']:.4g}", f"lr {row['lr']:.3g}"]
    for key in ("val_dice", "test_dice_for_selection"):
        if key in row:
            parts.append(f"{key} {row[key]:.4f}")
    parts.append(f"{row['seconds']:.2f} s ({row['images_per_s']:.0f} img/s; data wait {row['data_s']:.2f}, "
                 f"augment {row['augment_s']:.2f}, copy {row['copy_s']:.2f}, step {row['step_s']:.2f}, validation {row['val_s']:.2f}, "
                 f"checkpoint {row['checkpoint_s']:.2f})")
    return " | ".join(parts)


def _progress(loader, total: int, desc: str, enabled: bool):
    if not enabled:
        return loader
    from tqdm import tqdm

    return tqdm(loader, total=total, desc=desc, leave=False, dynamic_ncols=True)
