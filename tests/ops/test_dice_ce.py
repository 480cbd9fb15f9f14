"""The fused Dice + CE loss (Triton kernels; Triton's interpreter on CPU) against the torch definition:
loss and gradient, any class count, layout, dtype, ignored and invalid targets, every gradient element
written, torch.compile."""

from __future__ import annotations

import math

import pytest
import torch

from msvmunet.engine.losses import DiceCELoss

dice_ce = pytest.importorskip("msvmunet.ops.dice_ce", reason="Triton is not installed (pip install 'msvm-unet[triton]')")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """New buffers (the partial sums, the gradient) filled with NaN: an element a kernel leaves
    unwritten shows."""
    for name in ("empty", "empty_strided"):
        def poisoned(*args, _make=getattr(torch, name), **kwargs):
            t = _make(*args, **kwargs)
            return t.fill_(math.nan) if t.is_floating_point() else t

        monkeypatch.setattr(torch, name, poisoned)


def both(logits, target, **weights):
    """(loss, gradient) of the fused kernels and of the torch ops, for the same inputs."""
    out = []
    for fused in (True, False):
        x = logits.detach().clone().requires_grad_(True)
        loss = DiceCELoss(fused=fused, **weights)(x, target)
        (grad,) = torch.autograd.grad(loss, x)
        out.append((loss, grad))
    return out


@pytest.mark.parametrize("batch,classes,height,width", [(2, 9, 17, 23), (1, 4, 16, 16), (3, 2, 5, 7), (1, 9, 40, 31)])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_fused_loss_matches_torch(batch, classes, height, width, layout):
    logits = torch.randn(batch, classes, height, width, device=DEVICE) * 3
    if layout == "channels_last":
        logits = logits.to(memory_format=torch.channels_last)
    target = torch.randint(0, classes, (batch, height, width), device=DEVICE)
    target[0, 0, : width // 2] = -100  # ignored by the cross-entropy, still in the Dice's sum(p^2)
    (loss, grad), (ref_loss, ref_grad) = both(logits, target)
    assert loss.dtype == torch.float32 and loss.shape == ()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert grad.stride() == logits.stride()
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-8)


def test_fused_loss_weights_and_bf16_logits():
    logits = torch.randn(2, 9, 12, 20, device=DEVICE).bfloat16().to(memory_format=torch.channels_last)
    target = torch.randint(0, 9, (2, 12, 20), device=DEVICE)
    (loss, grad), (ref_loss, ref_grad) = both(logits, target, ce_weight=0.7, dice_weight=0.3)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert grad.dtype == torch.bfloat16
    torch.testing.assert_close(grad.float(), ref_grad.float(), rtol=1.6e-2, atol=1e-6)  # one bf16 rounding


def test_absent_classes_and_all_pixels_of_one_class():
    logits = torch.randn(2, 5, 9, 9, device=DEVICE)
    target = torch.full((2, 9, 9), 3, device=DEVICE)
    (loss, grad), (ref_loss, ref_grad) = both(logits, target)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-8)


def test_a_target_outside_the_classes_makes_the_loss_nan():
    logits = torch.randn(1, 4, 6, 6, device=DEVICE)
    target = torch.randint(0, 4, (1, 6, 6), device=DEVICE)
    target[0, 2, 3] = 4
    assert torch.isnan(DiceCELoss(fused=True)(logits, target))


def test_default_is_torch_off_cuda_and_fused_on_cuda():
    loss = DiceCELoss()
    assert loss._fused_fn is dice_ce.dice_ce_loss_triton
    calls = []
    original = loss._fused_fn
    loss._fused_fn = lambda *args: calls.append(args) or original(*args)
    loss(torch.randn(1, 3, 4, 4, device=DEVICE), torch.zeros(1, 4, 4, dtype=torch.long, device=DEVICE))
    assert bool(calls) == (DEVICE == "cuda")
    assert DiceCELoss(fused=False)._fused_fn is None


def test_fused_loss_under_torch_compile():
    logits = torch.randn(2, 9, 8, 12, device=DEVICE).to(memory_format=torch.channels_last).requires_grad_(True)
    target = torch.randint(0, 9, (2, 8, 12), device=DEVICE)
    criterion = DiceCELoss(fused=True)
    compiled = torch.compile(criterion, backend="aot_eager", fullgraph=True)
    loss = compiled(logits, target)
    (grad,) = torch.autograd.grad(loss, logits)
    ref = criterion(logits, target)
    (ref_grad,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(grad, ref_grad)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="logits must be"):
        DiceCELoss(fused=True)(torch.randn(2, 3, 4, 4, device=DEVICE), torch.zeros(2, 4, 5, dtype=torch.long,
                                                                                   device=DEVICE))
