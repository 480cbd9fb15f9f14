"""Behaviour of the model itself (small configurations of the paper's code path)."""

from __future__ import annotations

import math

import pytest
import torch

import msvmunet
from msvmunet import ConfigError, create_model, load_model, save_model
from msvmunet.models import PRESETS
from msvmunet.models.blocks import SS2D, MultiScaleMlp
from msvmunet.models.layers import DropPath

from ..conftest import rel_err


def nano(**kw):
    return create_model("nano", num_classes=kw.pop("num_classes", 4), **kw)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("hw", [(64, 64), (96, 128), (50, 70)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_output_shape(channels, hw):
    model = nano().eval()
    with torch.no_grad():
        out = model(torch.randn(2, channels, *hw))
    assert out.shape == (2, 4, *hw)
    assert torch.isfinite(out).all()


def test_one_channel_input_equals_its_three_channel_repeat():
    model = nano().eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), model(x.repeat(1, 3, 1, 1)))


def test_padding_does_not_change_a_multiple_of_32_crop_region_shape_only():
    model = nano().eval()
    x = torch.randn(1, 3, 70, 50)
    with torch.no_grad():
        padded = model(torch.nn.functional.pad(x, (0, 14, 0, 26)))
        assert torch.equal(model(x), padded[..., :70, :50])


def test_wrong_channel_count_is_a_clear_error():
    with pytest.raises(ValueError, match="expects 3 input channels"):
        nano()(torch.randn(1, 2, 64, 64))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        nano()(torch.randn(3, 64, 64))


def test_every_parameter_receives_a_gradient_and_nothing_is_nan():
    model = nano().train()
    x = torch.randn(2, 1, 64, 64)
    out = model(x)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_batch_one_trains():
    model = nano().train()
    out = model(torch.randn(1, 1, 64, 96))
    out.mean().backward()
    assert out.shape == (1, 4, 64, 96)


def test_drop_path_is_random_in_train_and_off_in_eval():
    model = nano().train()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = model(x), model(x)
    assert not torch.equal(a, b)  # different stochastic-depth masks (BatchNorm is deterministic)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    plain = nano(encoder={"drop_path_rate": 0.0}, decoder={"drop_path_rate": 0.0}).train()
    with torch.no_grad():
        assert torch.equal(plain(x), plain(x))


def test_drop_path_scales_kept_samples():
    torch.manual_seed(0)
    layer = DropPath(0.5).train()
    y = layer(torch.ones(4000, 3))
    kept = y[:, 0] != 0
    assert torch.all(y[kept] == 2.0) and torch.all(y[~kept] == 0.0)
    assert 0.45 < kept.float().mean() < 0.55


def test_official_stochastic_depth_schedules():
    tiny = PRESETS["tiny_0230s"]
    enc = [r for stage in tiny.encoder.drop_path_rates() for r in stage]
    assert len(enc) == 14 and enc[0] == 0.0 and math.isclose(enc[-1], 0.2, rel_tol=1e-6)
    assert [len(s) for s in tiny.encoder.drop_path_rates()] == [2, 2, 8, 2]
    dec = tiny.decoder.drop_path_rates()
    assert [[round(r, 6) for r in s] for s in dec] == [[0.2, 0.16], [0.12, 0.08], [0.04, 0.0]]
    small = PRESETS["small_0229s"].encoder.drop_path_rates()
    assert math.isclose(small[-1][-1], 0.3, rel_tol=1e-6)
    model = create_model("tiny_0230s")
    assert model.encoder.stages[2].blocks[0].drop_path.rate == pytest.approx(enc[4])
    assert model.decoder.stages[0].blocks[1].drop_path.rate == pytest.approx(0.16)


def test_official_initialisation():
    model = create_model("tiny_0230s")
    ssm = model.encoder.stages[0].blocks[0].ssm
    assert torch.equal(ssm.A_logs, torch.zeros(384, 1))  # log(1)
    assert torch.equal(ssm.Ds, torch.ones(384))
    dt = torch.nn.functional.softplus(ssm.dt_projs_bias)
    assert dt.min() >= 1e-4 and dt.max() <= 0.1 + 1e-6
    assert ssm.dt_projs_weight.abs().max() <= 6**-0.5
    # encoder linear layers: truncated normal, std 0.02; decoder: PyTorch's default
    assert abs(model.encoder.stages[2].blocks[0].mlp.fc1.weight.std().item() - 0.02) < 1e-3
    assert torch.equal(model.encoder.stages[2].blocks[0].mlp.fc1.bias, torch.zeros(1536))
    fuse = model.decoder.stages[0].fuse.weight
    assert fuse.abs().max() <= 1 / math.sqrt(768) and fuse.std() > 0.01
    s2 = SS2D(8, d_state=4, dt_rank=1)
    assert torch.allclose(s2.A_logs.exp(), torch.arange(1.0, 5.0).repeat(32, 1))


def test_multiscale_mlp_merged_kernel_is_the_sum_of_its_convolutions():
    mlp = MultiScaleMlp(4, 8)
    h = torch.randn(2, 8, 9, 7)
    expected = h + sum(conv(h) for conv in mlp.dwconvs)
    weight = mlp.merged_kernel()
    merged = torch.nn.functional.conv2d(h, weight, padding=2, groups=8)
    assert rel_err(merged, expected) < 1e-6


def test_save_and_load_round_trip(tmp_path):
    model = nano(num_classes=3).eval()
    path = save_model(model, tmp_path / "model.pt", classes=["bg", "a", "b"])
    loaded = load_model(path)
    assert loaded.config == model.config and not loaded.training
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    raw = torch.load(path, weights_only=True)
    assert raw["classes"] == ["bg", "a", "b"] and raw["format"] == "msvmunet"
    assert not list(tmp_path.glob("*.tmp"))


def test_backends_agree_on_the_model():
    model = nano().eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        fast = model(x)
        ref = model.set_scan_backend("reference")(x)
    assert rel_err(fast, ref) < 1e-5
    with pytest.raises(ConfigError, match="unknown scan backend"):
        model.set_scan_backend("cuda")


def test_registry():
    names = msvmunet.list_models()
    assert {"tiny_0230s", "small_0229s", "tiny", "small"} <= set(names)
    assert create_model("tiny", num_classes=4).config == create_model("tiny_0230s", num_classes=4).config
    small = msvmunet.model_config("small_0229s")
    assert small.encoder.depths == (2, 2, 20, 2) and small.encoder.drop_path_rate == 0.3
    with pytest.raises(ConfigError, match="unknown model 'base'"):
        create_model("base")
    with pytest.raises(ConfigError, match="decoder.depths needs one entry per up-stage"):
        create_model("nano", decoder={"depths": (1, 1)})
    with pytest.raises(ConfigError, match="unknown model options"):
        create_model("nano", depth=3)


def test_any_d_state_and_depths_work():
    model = create_model("nano", num_classes=2, encoder={"d_state": 4, "depths": (1, 2, 1)}, decoder={"depths": (2, 1), "d_state": 3})
    out = model(torch.randn(1, 1, 32, 32))
    out.sum().backward()
    assert out.shape == (1, 2, 32, 32)


def test_freeze_encoder_records_no_gradient_through_the_encoder():
    model = create_model("nano", num_classes=3)
    x = torch.randn(2, 1, 64, 64)
    before = dict(vars(model))
    model.freeze_encoder(True)
    assert vars(model) != before  # a module attribute: what torch.compile's guards look at
    assert not any(p.requires_grad for p in model.encoder.parameters())
    model(x).sum().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.decoder.parameters() if p.requires_grad)
    model.unfreeze_encoder()
    model.zero_grad(set_to_none=True)
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.encoder.parameters())
