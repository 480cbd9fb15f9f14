"""Same function and same checkpoints as the official code."""

from __future__ import annotations

import json

import pytest
import torch

import msvmunet
from msvmunet import CheckpointError, create_model, from_official_checkpoint
from msvmunet.models import DecoderConfig, EncoderConfig, MSVMUNet, ModelConfig, PRESETS
from msvmunet.models.checkpoints import infer_official_config, official_to_ours, ours_to_official

from ..conftest import rel_err


@pytest.fixture(scope="module")
def official_small(reference):
    return torch.load(reference / "official_small.pt", weights_only=True)


@pytest.fixture(scope="module")
def tiny_shapes(reference):
    return json.loads((reference / "official_tiny_0230s_state_dict.json").read_text())


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_reproduces_official_small_output(official_small, backend):
    model = from_official_checkpoint(official_small["state_dict"]).set_scan_backend(backend)
    assert not model.training
    with torch.no_grad():
        out = model(official_small["input"])
    assert out.shape == official_small["output"].shape == (2, 9, 64, 64)
    assert rel_err(out, official_small["output"]) < 1e-4


def test_official_small_config_is_inferred(official_small):
    cfg = infer_official_config(official_small["state_dict"])
    enc = official_small["encoder_config"]
    assert cfg.encoder.embed_dim == enc["EMBED_DIM"] == 32
    assert list(cfg.encoder.depths) == enc["DEPTHS"]
    assert cfg.encoder.d_state == enc["SSM_D_STATE"] and cfg.encoder.ssm_ratio == enc["SSM_RATIO"]
    assert cfg.encoder.mlp_ratio == enc["MLP_RATIO"] and cfg.encoder.dt_rank == "auto"
    assert list(cfg.decoder.depths) == official_small["decoder_depths"][1:]
    assert cfg.num_classes == official_small["num_classes"]


def test_lightning_checkpoint_file(official_small, tmp_path):
    path = tmp_path / "epoch=299.ckpt"
    torch.save({"epoch": 299, "state_dict": {"_model." + k: v for k, v in official_small["state_dict"].items()}}, path)
    model = from_official_checkpoint(path)
    with torch.no_grad():
        assert rel_err(model(official_small["input"]), official_small["output"]) < 1e-4


def test_paper_model_state_dict_matches_official_keys_and_shapes(tiny_shapes):
    shapes = tiny_shapes["state_dict_shapes"]
    model = create_model("tiny_0230s", num_classes=9, in_channels=3)
    official = ours_to_official(model.state_dict())
    assert {k: list(v.shape) for k, v in official.items()} == shapes
    assert msvmunet.count_parameters(model) == tiny_shapes["num_parameters"] == 35_925_513


def test_checkpoint_of_official_shapes_loads_strictly(tiny_shapes):
    generator = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=generator) if s else torch.tensor(7) for k, s in tiny_shapes["state_dict_shapes"].items()}
    model = from_official_checkpoint({"state_dict": {"_model." + k: v for k, v in state.items()}})
    assert model.config == PRESETS["tiny_0230s"]
    assert msvmunet.count_parameters(model) == 35_925_513
    loaded = ours_to_official(model.state_dict())
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_key_mapping_round_trip_is_exact(official_small):
    state = official_small["state_dict"]
    ours = official_to_ours(state)
    assert len(ours) == len(state)
    back = ours_to_official(ours)
    assert list(back) == list(state)
    assert all(back[k] is state[k] for k in state)
    assert "encoder.stages.0.blocks.0.ssm.x_proj_weight" in ours
    assert "decoder.stages.0.blocks.0.mlp.dwconvs.2.weight" in ours


def test_any_configuration_round_trips_through_official_layout():
    config = ModelConfig(
        EncoderConfig(embed_dim=16, depths=(1, 2, 1), d_state=3, ssm_ratio=2.0, dt_rank=3, mlp_ratio=2.0, in_channels=1),
        DecoderConfig(depths=(2, 1), d_state=2, ssm_ratio=1.5, mlp_ratio=3.0, kernel_sizes=(1, 3, 7)),
        num_classes=5,
    )
    model = MSVMUNet(config).eval()
    inferred = infer_official_config(ours_to_official(model.state_dict()))
    assert inferred == config.replace(encoder=EncoderConfig(**{**config.encoder.__dict__, "drop_path_rate": 0.2}))
    rebuilt = from_official_checkpoint(msvmunet.to_official_state_dict(model))
    x = torch.randn(1, 1, 32, 48)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


def test_bad_checkpoints_name_the_problem(official_small, tmp_path):
    state = dict(official_small["state_dict"])
    missing = dict(state)
    del missing["decoder.layers.1.concat_layer.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys: decoder\.stages\.1\.fuse\.bias"):
        from_official_checkpoint(missing)
    extra = dict(state, **{"decoder.layers.0.extra.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"decoder\.layers\.0\.extra\.weight"):
        from_official_checkpoint(extra)
    wrong = dict(state, **{"decoder.out_layers.0.norm.weight": torch.zeros(7)})
    with pytest.raises(CheckpointError, match=r"decoder\.head\.norm\.weight: checkpoint \(7,\) vs model \(32,\)"):
        from_official_checkpoint(wrong)
    with pytest.raises(CheckpointError, match="key 'encoder.layer0.0.weight' is missing"):
        from_official_checkpoint({"foo.weight": torch.zeros(1)})
    garbage = tmp_path / "broken.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="broken.ckpt: not an msvmunet/PyTorch checkpoint"):
        from_official_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="not found"):
        from_official_checkpoint(tmp_path / "nope.ckpt")


def test_pickled_code_is_refused(tmp_path):
    import argparse

    path = tmp_path / "evil.ckpt"
    # any non-allow-listed object stands for pickled code: weights_only=True must refuse it
    torch.save({"state_dict": {"x": torch.zeros(1)}, "obj": argparse.Namespace(a=1)}, path)
    with pytest.raises(CheckpointError, match=r"not an msvmunet checkpoint: it holds a pickled Python object "
                                              r"\(argparse.Namespace\)") as err:
        from_official_checkpoint(path)
    assert "weights_only=False" not in str(err.value) and "trust" not in str(err.value)
