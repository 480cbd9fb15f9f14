"""The training loss equals the official DiceCELoss, written out here as the official code computes it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from msvmunet.engine.losses import DiceCELoss, soft_dice_loss


def official_dice_ce(logits, target, ce_weight=0.4, dc_weight=0.6):
    """The official loss, loop by loop: CE + mean over classes of 1 - (2I + s) / (Z + Y + s)."""
    ce = F.cross_entropy(logits, target)
    probs = torch.softmax(logits, dim=1)
    loss = 0.0
    for i in range(logits.shape[1]):
        p, t = probs[:, i], (target == i).float()
        smooth = 1e-5
        intersect = torch.sum(p * t)
        loss += 1 - (2 * intersect + smooth) / (torch.sum(t * t) + torch.sum(p * p) + smooth)
    return ce * ce_weight + loss / logits.shape[1] * dc_weight


def test_matches_official_formula():
    logits = torch.randn(3, 9, 17, 23, dtype=torch.float64)
    target = torch.randint(0, 9, (3, 17, 23))
    ours = DiceCELoss()(logits, target)
    assert torch.allclose(ours.double(), official_dice_ce(logits.float(), target).double(), rtol=1e-5)


def test_absent_class_and_gradients():
    logits = torch.randn(2, 4, 8, 8, requires_grad=True)
    target = torch.zeros(2, 8, 8, dtype=torch.long)  # classes 1..3 absent
    loss = DiceCELoss()(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    # a confident perfect prediction has ~zero Dice loss: an absent class scores (0 + s) / (0 + s) = 1
    perfect = F.one_hot(target, 4).permute(0, 3, 1, 2).float() * 100
    assert soft_dice_loss(perfect, target) < 1e-4
    assert soft_dice_loss(torch.zeros_like(perfect), target) > 0.5


def test_bf16_logits_are_accumulated_in_float32():
    logits = torch.randn(2, 9, 16, 16)
    target = torch.randint(0, 9, (2, 16, 16))
    full = DiceCELoss()(logits, target)
    half = DiceCELoss()(logits.bfloat16(), target)
    assert half.dtype == torch.float32
    assert abs(full.item() - half.item()) < 1e-2
