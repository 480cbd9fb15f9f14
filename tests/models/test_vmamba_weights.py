"""VMamba ImageNet encoder weights, with checkpoints of the published layouts built here."""

from __future__ import annotations

import json
import re

import pytest
import torch

from msvmunet import CheckpointError, create_model
from msvmunet.models import EncoderConfig, MSVMUNet, ModelConfig
from msvmunet.models.checkpoints import ours_to_official

TINY_FILE = "vssm1_tiny_0230s_ckpt_epoch_264.pth"


def official_encoder_to_vmamba(key: str) -> str:
    """VMamba's own key for an official MSVM-UNet encoder key (written out independently here)."""
    key = key[len("encoder."):]
    for ours, theirs in (("layer0.0.", "patch_embed.0."), ("layer0.2.", "patch_embed.2."),
                         ("layer1.0.", "patch_embed.5."), ("layer1.2.", "patch_embed.7.")):
        if key.startswith(ours):
            return theirs + key[len(ours):]
    return re.sub(r"^downsamples\.(\d+)\.", r"layers.\1.downsample.", key)


def vmamba_checkpoint(shapes: dict[str, list[int]], seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    model = {official_encoder_to_vmamba(k): torch.randn(s, generator=g) for k, s in shapes.items() if k.startswith("encoder.")}
    model.update({
        "classifier.norm.weight": torch.ones(768), "classifier.norm.bias": torch.zeros(768),
        "classifier.head.weight": torch.zeros(1000, 768), "classifier.head.bias": torch.zeros(1000),
    })
    return {"model": model, "epoch": 264}


@pytest.fixture(scope="module")
def tiny_vmamba(reference):
    shapes = json.loads((reference / "official_tiny_0230s_state_dict.json").read_text())["state_dict_shapes"]
    return vmamba_checkpoint(shapes)


def test_all_272_encoder_tensors_load_and_classifier_is_ignored(tiny_vmamba, tmp_path):
    ckpt = tmp_path / TINY_FILE
    torch.save(tiny_vmamba, ckpt)
    encoder_keys = [k for k in tiny_vmamba["model"] if not k.startswith("classifier.")]
    assert len(encoder_keys) == 272
    model = create_model("tiny_0230s", pretrained_encoder=ckpt)
    official = ours_to_official(model.state_dict())
    for key, value in official.items():
        if key.startswith("encoder."):
            assert torch.equal(value, tiny_vmamba["model"][official_encoder_to_vmamba(key)]), key


def test_missing_and_mismatched_tensors_are_listed(tiny_vmamba):
    broken = {"model": dict(tiny_vmamba["model"])}
    del broken["model"]["layers.2.blocks.7.op.Ds"]
    broken["model"]["patch_embed.5.bias"] = torch.zeros(95)
    with pytest.raises(CheckpointError) as err:
        create_model("tiny_0230s", pretrained_encoder=broken)
    msg = str(err.value)
    assert "stages.2.blocks.7.ssm.Ds" in msg and "stem.conv2.bias" in msg and TINY_FILE in msg


def test_the_file_named_in_the_official_readme_is_refused_with_the_right_name():
    # vssm_tiny_0230_ckpt_epoch_262.pth: ssm_ratio 2, depths 2-2-5-2
    other = MSVMUNet(ModelConfig(EncoderConfig(depths=(2, 2, 5, 2), ssm_ratio=2.0)))
    shapes = {k: list(v.shape) for k, v in ours_to_official(other.state_dict()).items()}
    ckpt = vmamba_checkpoint(shapes)
    with pytest.raises(CheckpointError, match=re.escape(TINY_FILE)):
        create_model("tiny_0230s", pretrained_encoder=ckpt)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        create_model("tiny_0230s", pretrained_encoder=tmp_path / TINY_FILE)
