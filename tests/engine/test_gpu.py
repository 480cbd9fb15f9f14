"""GPU behaviour: the captured (CUDA-graph) training step and the Triton backend inside the model.

Skipped without CUDA.
"""

from __future__ import annotations

import pytest
import torch

from msvmunet import create_model, from_official_checkpoint
from msvmunet.engine import train

from ..conftest import rel_err
from .conftest import quick_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_graph_training_matches_eager_training(tiny_phantom, tmp_path):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    runs = {}
    for graph in (False, True):
        config = quick_config(tiny_phantom, tmp_path / f"graph{graph}", device="cuda", precision="fp32",
                              epochs=2, steps_per_epoch=6, freeze_encoder_epochs=1, cuda_graph=graph)
        runs[graph] = torch.load(train(config) / "final.pt", weights_only=True)
    a, b = runs[False]["state_dict"], runs[True]["state_dict"]
    num = sum((a[k].double() - b[k].double()).pow(2).sum() for k in a if a[k].is_floating_point())
    den = sum(a[k].double().pow(2).sum() for k in a if a[k].is_floating_point())
    assert (num / den).sqrt() < 1e-3
    assert [r["epoch"] for r in runs[True]["history"]] == [1, 2]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_triton_model_matches_torch_backend(precision):
    model = create_model("nano", num_classes=9).cuda().eval()
    x = torch.rand(2, 1, 96, 64, device="cuda")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    with torch.no_grad(), torch.autocast("cuda", dtype=dtype, enabled=precision == "bf16"):
        fast = model.set_scan_backend("triton")(x)
        slow = model.set_scan_backend("torch")(x)
    assert rel_err(fast, slow) < (1e-5 if precision == "fp32" else 2e-2)


def test_official_output_on_gpu(reference):
    ref = torch.load(reference / "official_small.pt", weights_only=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = from_official_checkpoint(ref["state_dict"]).cuda().set_scan_backend("triton")
    with torch.no_grad():
        out = model(ref["input"].cuda())
    assert rel_err(out.cpu(), ref["output"]) < 1e-4


@pytest.mark.parametrize("form", ["whole", "halves"])
def test_compiled_model_trains_the_encoder_after_unfreezing(form):
    """torch.compile's guards do not see requires_grad: the freeze flag must force the training graph
    (for a whole compiled model, and for the trainer's compiled halves)."""
    from msvmunet.engine.step import CompiledHalves

    model = create_model("nano", num_classes=3).cuda()
    compiled = torch.compile(model) if form == "whole" else CompiledHalves(model)
    x = torch.randn(2, 1, 64, 64, device="cuda")
    model.freeze_encoder(True)
    compiled(x).sum().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    model.freeze_encoder(False)
    model.zero_grad(set_to_none=True)
    compiled(x).sum().backward()
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_checkpoint_snapshot_is_taken_on_the_device_at_save_time(tmp_path):
    from msvmunet.engine.checkpointing import CheckpointWriter

    weight = torch.ones(1 << 20, device="cuda")
    torch.cuda._sleep(50_000_000)  # queued work: the snapshot must wait for it, the host must not
    weight.mul_(2.0)
    writer = CheckpointWriter()
    writer.save(tmp_path / "last.pt", {"w": weight, "lr": torch.tensor(0.5, device="cuda")})
    weight.fill_(7.0)  # the next training steps, queued after the snapshot
    writer.close()
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["w"].device.type == "cpu" and torch.equal(saved["w"], torch.full((1 << 20,), 2.0))
    assert saved["lr"].item() == 0.5
