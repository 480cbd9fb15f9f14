"""One optimisation step, run eagerly or replayed from a captured CUDA graph.

On one CUDA GPU the whole step (forward, loss, backward, fused AdamW) is captured in a CUDA graph
after a few eager warm-up steps, and replayed for every later batch: no per-kernel launch cost,
which is most of an eager step's time for this model. Warm-up steps and captures are real
training steps on real batches; a new capture follows every change of the trainable set (the
encoder freeze). Batches must all have the shape of the captured one (the trainer drops the last
partial batch of each epoch in this mode).

Under DDP (torchrun) the step runs eagerly (compiled or not): DDP all-reduces gradient buckets
during the backward, and that is not captured here. :meth:`StepRunner.describe` says which path
a runner takes; the trainer prints it.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .inference import autocast_context

WARMUP_STEPS = 3


class CompiledHalves(torch.nn.Module):
    """An :class:`~msvmunet.models.MSVMUNet` for training with its encoder half and its decoder half each
    compiled by ``torch.compile`` on its own (``model.forward_halves``); parameters and state stay ``model``'s.

    Why two: the recipe trains with the encoder frozen, then training it. A whole compiled model is
    compiled twice in full (at the unfreeze the backward through the encoder is a new graph). In halves
    the unfreeze recompiles the encoder half only: the decoder half gets the same inputs in both phases
    (a frozen encoder's features are handed over as leaves that require gradients) and is compiled once.
    """

    def __init__(self, model: torch.nn.Module, *, mode: str | None = None, options: dict | None = None,
                 backend: str | Callable = "inductor") -> None:
        super().__init__()
        self.model = model
        self.encode = torch.compile(model.encode, mode=mode, options=options or None, backend=backend)
        self.decode = torch.compile(model.decode, mode=mode, options=options or None, backend=backend)

    def forward(self, x: Tensor) -> Tensor:
        return self.model.forward_halves(x, self.encode, self.decode)


class StepRunner:
    def __init__(self, model: torch.nn.Module, criterion: Callable[[Tensor, Tensor], Tensor],
                 optimizer: torch.optim.Optimizer, scaler, device: torch.device, precision: str,
                 use_graph: bool) -> None:
        self.model, self.criterion, self.optimizer, self.scaler = model, criterion, optimizer, scaler
        self.device, self.precision = device, precision
        self.use_graph = use_graph
        self.reset()

    def describe(self) -> str:
        """The step path, e.g. ``step: compiled, CUDA graph`` or ``step: DDP (2 processes), compiled, eager launches``."""
        from torch.nn.parallel import DistributedDataParallel

        model, parts = self.model, []
        if isinstance(model, DistributedDataParallel):
            import torch.distributed as dist

            n = dist.get_world_size(model.process_group)
            parts.append(f"DDP ({n} process{'es' if n > 1 else ''})")
            model = model.module
        parts.append("compiled (encoder and decoder halves)" if isinstance(model, CompiledHalves) else "not compiled")
        parts.append("CUDA graph" if self.use_graph else "eager launches")
        return "step: " + ", ".join(parts)

    def reset(self) -> None:
        """Forget the captured graph (call when the trainable parameters change)."""
        self.graph = None
        self.static = None
        self.warmup_left = WARMUP_STEPS

    def __call__(self, images: Tensor, labels: Tensor) -> Tensor:
        """Train on one batch; returns the (detached) loss."""
        if not self.use_graph:
            return self._eager(images, labels)
        if self.graph is None and self.warmup_left > 0:
            self.warmup_left -= 1
            return self._side_stream(lambda: self._eager(images, labels))
        if self.graph is None:
            self._capture(images, labels)
        static_images, static_labels, static_loss = self.static
        if images.shape != static_images.shape:
            raise RuntimeError(f"batch shape {tuple(images.shape)} differs from the captured {tuple(static_images.shape)}")
        static_images.copy_(images)
        static_labels.copy_(labels)
        self.graph.replay()
        return static_loss.detach().clone()

    def _loss(self, images: Tensor, labels: Tensor) -> Tensor:
        with autocast_context(self.device, self.precision, cache=not self.use_graph):
            logits = self.model(images)
        return self.criterion(logits, labels)

    def _eager(self, images: Tensor, labels: Tensor) -> Tensor:
        loss = self._loss(images, labels)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return loss.detach()

    def _side_stream(self, fn: Callable[[], Tensor]) -> Tensor:
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            out = fn()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        return out

    def _capture(self, images: Tensor, labels: Tensor) -> None:
        static_images, static_labels = images.clone(), labels.clone()
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        # thread-local: the DataLoader's pin-memory thread keeps using CUDA while this thread captures
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            loss = self._loss(static_images, static_labels)
            loss.backward()
            self.optimizer.step()
        self.graph, self.static = graph, (static_images, static_labels, loss)


def graph_capable(device: torch.device, world_size: int, precision: str) -> bool:
    """Whether the training step can be captured: one CUDA process, no fp16 loss scaling."""
    return device.type == "cuda" and world_size == 1 and precision in ("bf16", "fp32")
