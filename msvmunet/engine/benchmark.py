"""Speed of the whole model: training step and inference, ms / images per second / peak memory.

On CUDA, times come from CUDA events around each iteration (median after warm-up); on the CPU,
from the wall clock. Inputs are random data, never zeros.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch

from ..models import create_model
from .inference import autocast_context
from .losses import DiceCELoss
from .step import CompiledHalves


@dataclass
class BenchResult:
    mode: str
    batch: int
    ms: float
    images_per_s: float
    peak_gib: float | None

    def row(self) -> str:
        mem = f"{self.peak_gib:6.2f} GiB" if self.peak_gib is not None else "      n/a"
        return f"{self.mode:<24} batch {self.batch:>3}  {self.ms:9.2f} ms  {self.images_per_s:9.1f} img/s  peak {mem}"


def time_ms(fn: Callable[[], Any], device: torch.device, warmup: int = 3, repeats: int = 20) -> float:
    """Median milliseconds of `fn` after `warmup` calls (CUDA events on a GPU, the wall clock on a CPU)."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        times = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def _peak(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def benchmark(
    model_name: str = "tiny_0230s",
    *,
    device: str = "cuda",
    batch: int = 32,
    size: int = 224,
    num_classes: int = 9,
    precision: str = "bf16",
    backend: str = "auto",
    modes: tuple[str, ...] = ("train", "infer"),
    compile: bool = False,
    compile_mode: str | None = None,
    compile_options: dict[str, Any] | None = None,
    cuda_graph: bool = False,
    warmup: int = 5,
    repeats: int = 20,
    seed: int = 0,
) -> list[BenchResult]:
    """Time a training step (forward, DiceCE loss, backward, AdamW) and/or inference.

    ``cuda_graph``: capture the whole step (training: forward, loss, backward and the fused AdamW
    step) in a CUDA graph and time its replays; ``compile``: ``torch.compile(model, mode=compile_mode)``,
    and the loss compiled the same way (as the trainer does with ``compile``); ``compile_options``:
    inductor settings for ``torch.compile(options=...)`` (not together with ``compile_mode``).
    """
    if compile_mode is not None and compile_options:
        raise ValueError("benchmark: give compile_mode or compile_options, not both (torch.compile takes one)")
    dev = torch.device(device)
    torch.manual_seed(seed)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = create_model(model_name, num_classes=num_classes, scan_backend=backend).to(dev)
    x = torch.rand(batch, 1, size, size, device=dev) * 2 - 1
    y = torch.randint(0, num_classes, (batch, size, size), device=dev)

    results = []
    graphed = cuda_graph and dev.type == "cuda"
    suffix = ("+compile" if compile else "") + ("+graph" if graphed else "")
    for mode in ("train", "infer"):
        if mode in modes:
            _reset(dev)
            step = make_step(model, mode, x, y, precision, compile=compile, compile_mode=compile_mode,
                             compile_options=compile_options, cuda_graph=graphed)
            ms = time_ms(step, dev, warmup, repeats)
            results.append(BenchResult(mode + suffix, batch, ms, batch / ms * 1e3, _peak(dev)))
            del step  # the optimiser's state and the graph's buffers go with it
    return results


def make_step(model: torch.nn.Module, mode: str, x: torch.Tensor, y: torch.Tensor, precision: str = "bf16", *,
              compile: bool = False, compile_mode: str | None = None, compile_options: dict[str, Any] | None = None,
              cuda_graph: bool = False) -> Callable[[], Any]:
    """The unit that ``benchmark`` times (and ``benchmarks/gpu_profile.py`` profiles): for ``mode="train"``
    one training step of ``model`` on ``(x, y)`` (forward under autocast, DiceCE loss, backward, AdamW; fused
    on CUDA), for ``"infer"`` one forward under ``inference_mode``. ``compile``: the model and the loss
    through ``torch.compile(mode=compile_mode, options=compile_options)`` (the model in the trainer's two
    halves, :class:`~msvmunet.engine.step.CompiledHalves`, for training); ``cuda_graph``: the step captured
    in a CUDA graph, the returned callable replaying it. Sets the model's train / eval mode."""
    dev = x.device

    def compiled(module: torch.nn.Module) -> torch.nn.Module:
        return torch.compile(module, mode=compile_mode, options=compile_options or None) if compile else module

    if mode == "infer":
        model.eval()
        net = compiled(model)

        def forward() -> torch.Tensor:
            with torch.inference_mode(), autocast_context(dev, precision, cache=not cuda_graph):
                return net(x)

        return capture_graph(forward, dev) if cuda_graph else forward
    if mode != "train":
        raise ValueError(f"make_step: mode is 'train' or 'infer', not {mode!r}")
    model.train()
    net = CompiledHalves(model, mode=compile_mode, options=compile_options) if compile else model
    criterion = compiled(DiceCELoss())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-3, fused=dev.type == "cuda",
                            capturable=cuda_graph)

    def step() -> None:
        with autocast_context(dev, precision, cache=not cuda_graph):
            logits = net(x)
        loss = criterion(logits, y)
        if not cuda_graph:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return capture_graph(step, dev, before_capture=lambda: opt.zero_grad(set_to_none=True)) if cuda_graph else step


def capture_graph(fn: Callable[[], Any], device: torch.device, before_capture: Callable[[], Any] | None = None
                  ) -> Callable[[], Any]:
    """Capture ``fn`` (static input buffers) in a CUDA graph; calling replays it."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(3):
            if before_capture is not None:
                before_capture()
            fn()
    torch.cuda.current_stream(device).wait_stream(stream)
    if before_capture is not None:
        before_capture()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        out = fn()

    def replay() -> torch.Tensor:
        graph.replay()
        return out

    return replay


def results_dict(results: list[BenchResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]


# ---------------------------------------------------------------------------------------- end to end

PHASE_COLUMNS = (("data_s", "data wait"), ("augment_s", "augment"), ("copy_s", "copy"), ("step_s", "step"),
                 ("val_s", "validation"), ("checkpoint_s", "checkpoint"))
IN_PARALLEL = ("augment",)  # summed over the loader's workers: not a share of the epoch's time


def benchmark_training(data: str, *, output: str | None = None, frozen_epochs: int = 1, train_epochs: int = 2,
                       preset: str = "synapse", **overrides: Any) -> list[dict[str, Any]]:
    """Time the real training run over real files: ``msvmunet train`` with the preset's recipe
    (reading, resizing, augmenting, the step, logging, checkpoints), ``frozen_epochs`` epochs with the
    encoder frozen, then ``train_epochs`` training it. Returns the history rows (per epoch: seconds,
    images/s, and the seconds of each phase). ``output``: the run folder (default: a temporary one,
    removed afterwards); ``overrides``: any training options (``num_workers``, ``compile``, ...)."""
    import csv
    import shutil
    import tempfile
    from pathlib import Path

    from .config import resolve_config
    from .trainer import train

    if frozen_epochs < 0 or train_epochs < 0 or frozen_epochs + train_epochs < 1:
        raise ValueError("benchmark_training: need at least one epoch (frozen_epochs + train_epochs >= 1)")
    folder = Path(output) if output else Path(tempfile.mkdtemp(prefix="msvmunet-bench-"))
    values = dict(pretrained_encoder="none", val_cases=[], select_on_test=False)
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = resolve_config(preset, data=str(data), output=str(folder), epochs=frozen_epochs + train_epochs,
                            freeze_encoder_epochs=frozen_epochs, **values)
    try:
        train(config)
        with open(folder / "history.csv", newline="") as f:
            rows = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]
    finally:
        if output is None:
            shutil.rmtree(folder, ignore_errors=True)
    return rows


def _number(text: str) -> Any:
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text else value


def training_table(rows: list[dict[str, Any]]) -> str:
    """The end-to-end rows as a table: per epoch, seconds and images/s, and each phase's seconds.

    ``data wait`` is host time blocked on the data loader; ``augment`` the seconds the loader's workers
    spent augmenting (summed over batches, in parallel with everything else, so never ``slowest``);
    ``copy`` and ``step`` are device times (CUDA events) of the host-to-device copy plus normalisation,
    and of the training step; validation and checkpoint are host times. The phases can overlap (the
    GPU works while the host waits)."""
    head = ["epoch", "encoder", "seconds", "img/s", *(name for _, name in PHASE_COLUMNS), "slowest"]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for row in rows:
        phases = {name: float(row.get(key) or 0.0) for key, name in PHASE_COLUMNS}
        slowest = max((name for name in phases if name not in IN_PARALLEL), key=phases.get)
        cells = [str(row["epoch"]), "frozen" if row.get("encoder_frozen") else "training",
                 f"{row['seconds']:.2f}", f"{row['images'] / row['seconds']:.0f}",
                 *(f"{v:.2f}" for v in phases.values()), slowest]
        lines.append(" | ".join(cells))
    return "\n".join(lines)
