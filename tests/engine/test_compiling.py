"""Inductor settings for torch.compile: checked against torch._inductor.config, parsed from FIELD=VALUE,
the training default and its flag / YAML forms."""

from __future__ import annotations

import pytest

from msvmunet.cli import main
from msvmunet.engine.compiling import TRAIN_INDUCTOR, check_inductor_options, parse_inductor_items
from msvmunet.engine.config import TrainConfig, resolve_config
from msvmunet.errors import ConfigError


def test_good_settings_keep_their_types():
    options = {"max_autotune_pointwise": True, "max_fusion_size": 32, "combo_kernels": False}
    assert check_inductor_options(options) == options
    assert check_inductor_options({}) == {}
    assert parse_inductor_items(["max_autotune_pointwise=1", "max_fusion_size=32", "combo_kernels=false"]) == options


@pytest.mark.parametrize("options, message", [
    ({"no_such_setting": 1}, "'no_such_setting' is not a bool, number or text setting"),
    ({"triton.cudagraphs": True}, "'triton.cudagraphs' is not"),
    ({"max_autotune_pointwise": 1}, "max_autotune_pointwise takes a value of type bool, got 1"),
    ({"max_fusion_size": True}, "max_fusion_size takes a value of type int, got True"),
    ({"max_fusion_size": "64"}, "max_fusion_size takes a value of type int, got '64'"),
    (["max_autotune_pointwise"], "expected a mapping"),
])
def test_bad_settings_are_named(options, message):
    with pytest.raises(ConfigError, match="where-it-came-from") as err:
        check_inductor_options(options, "where-it-came-from")
    assert message in str(err.value)


def test_training_default_and_overrides():
    assert TrainConfig().inductor == TRAIN_INDUCTOR == {"max_autotune_pointwise": True}
    assert TrainConfig().inductor is not TRAIN_INDUCTOR  # each config its own copy
    assert TrainConfig(inductor={}).inductor == {}
    assert TrainConfig(inductor=None).inductor == {}
    config = TrainConfig(inductor={"combo_kernels": True})
    assert TrainConfig.from_dict(config.to_dict()).inductor == {"combo_kernels": True}


def test_yaml_with_a_bad_setting_is_named(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("inductor: {max_autotune_pointwise: yes, unrolled_everything: 3}\n")
    with pytest.raises(ConfigError, match="inductor: 'unrolled_everything' is not"):
        resolve_config(None, path)
    path.write_text("inductor: {max_autotune_pointwise: false}\n")
    assert resolve_config(None, path).inductor == {"max_autotune_pointwise": False}


@pytest.mark.parametrize("flags, expected", [([], TRAIN_INDUCTOR), (["--inductor"], {}),
                                             (["--inductor", "combo_kernels=1", "max_autotune_pointwise=0"],
                                              {"combo_kernels": True, "max_autotune_pointwise": False})])
def test_train_flag_replaces_the_default(flags, expected, monkeypatch, tmp_path):
    import msvmunet.engine.trainer as trainer

    seen = []
    monkeypatch.setattr(trainer, "train", lambda config, **_: seen.append(config) or tmp_path)
    assert main(["train", "--preset", "demo", "--data", str(tmp_path), *flags]) == 0
    assert seen[0].inductor == expected


def test_train_flag_with_a_bad_setting_is_named(capsys, tmp_path):
    assert main(["train", "--preset", "demo", "--data", str(tmp_path), "--output", str(tmp_path / "run"),
                 "--inductor", "combo_kernels=maybe"]) != 0
    assert "--inductor 'combo_kernels=maybe': combo_kernels takes a value of type bool" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_compiled_halves_train_as_the_model_and_compile_the_decoder_once():
    """Training compiles the model in two halves: the same losses and gradients as the plain model in both
    phases of the recipe, and at the unfreeze only the encoder half is compiled again (dynamo's compiled
    entries per half counted; the decoder half's guards pass because it gets features that require
    gradients in both phases)."""
    import torch
    from torch._C._dynamo.eval_frame import _debug_get_cache_entry_list as compiled_entries

    from msvmunet import create_model
    from msvmunet.engine.step import CompiledHalves
    from msvmunet.models import MSVMUNet

    torch._dynamo.reset()
    torch.manual_seed(0)
    no_drop = {"drop_path_rate": 0.0}  # the same function in both runs (BatchNorm in training mode as in training)
    model = create_model("nano", num_classes=3, encoder=no_drop, decoder=no_drop)
    halves = CompiledHalves(model, backend="eager")
    x = torch.randn(2, 1, 64, 64)
    entries = []
    for frozen in (True, False):
        model.freeze_encoder(frozen)
        grads = []
        for net in (model, halves):
            model.zero_grad(set_to_none=True)
            loss = net(x).square().mean()
            loss.backward()
            grads.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
        (loss_a, a), (loss_b, b) = grads
        assert torch.allclose(loss_a, loss_b) and a.keys() == b.keys()
        assert all(torch.allclose(a[n], b[n], rtol=1e-4, atol=1e-6) for n in a)
        assert any(n.startswith("encoder.") for n in a) != frozen
        entries.append((len(compiled_entries(MSVMUNet.encode.__code__)), len(compiled_entries(MSVMUNet.decode.__code__))))
    assert entries == [(1, 1), (2, 1)]
