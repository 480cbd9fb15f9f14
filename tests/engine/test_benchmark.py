"""engine.benchmark on the CPU: the timed step (training and inference) and the results it reports."""

from __future__ import annotations

import pytest
import torch

from msvmunet import create_model
from msvmunet.engine.benchmark import benchmark, make_step


@pytest.fixture
def small():
    torch.manual_seed(0)
    model = create_model("nano", num_classes=3, scan_backend="torch")
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    y = torch.randint(0, 3, (2, 64, 64))
    return model, x, y


def test_training_step_updates_every_trained_parameter(small):
    model, x, y = small
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    step = make_step(model, "train", x, y, "fp32")
    step()
    step()
    assert model.training
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_inference_step_is_the_eval_forward(small):
    model, x, y = small
    model.train()
    out = make_step(model, "infer", x, y, "fp32")()
    assert not model.training
    with torch.no_grad():
        expected = model(x)
    assert out.shape == (2, 3, 64, 64)
    torch.testing.assert_close(out, expected)


def test_unknown_mode_is_named(small):
    model, x, y = small
    with pytest.raises(ValueError, match="'eval'"):
        make_step(model, "eval", x, y)


def test_benchmark_reports_both_modes():
    rows = benchmark("nano", device="cpu", batch=2, size=64, num_classes=3, precision="fp32", backend="torch",
                     warmup=1, repeats=2)
    assert [r.mode for r in rows] == ["train", "infer"]
    for r in rows:
        assert r.ms > 0 and r.images_per_s == pytest.approx(2 / r.ms * 1e3) and r.peak_gib is None
