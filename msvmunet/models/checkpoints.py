"""Checkpoints: the official MSVM-UNet layout <-> ours, configuration inferred from tensor shapes,
VMamba ImageNet encoder weights, and this package's own checkpoint format.

Every file is read with ``torch.load(..., weights_only=True)``: no pickle code runs.
"""

from __future__ import annotations

import math
import os
import pickle
import re
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from .._files import atomic_write
from ..errors import CheckpointError
from .config import PRESETS, DecoderConfig, EncoderConfig, ModelConfig
from .msvm_unet import MSVMUNet

FORMAT = "msvmunet"
FORMAT_VERSION = 1

# (official prefix, our prefix); {i}, {j}, {k} stand for integers. First match wins, so the
# more specific prefixes come first. The same table maps both ways.
_KEY_RULES: list[tuple[str, str]] = [
    ("encoder.layer0.0.", "encoder.stem.conv1."),
    ("encoder.layer0.2.", "encoder.stem.norm1."),
    ("encoder.layer1.0.", "encoder.stem.conv2."),
    ("encoder.layer1.2.", "encoder.stem.norm2."),
    ("encoder.layers.{i}.blocks.{j}.op.", "encoder.stages.{i}.blocks.{j}.ssm."),
    ("encoder.layers.{i}.blocks.{j}.", "encoder.stages.{i}.blocks.{j}."),
    ("encoder.downsamples.{i}.1.", "encoder.downsamples.{i}.conv."),
    ("encoder.downsamples.{i}.3.", "encoder.downsamples.{i}.norm."),
    ("decoder.layers.{i}.up.expand.0.", "decoder.stages.{i}.up.proj."),
    ("decoder.layers.{i}.up.expand.1.", "decoder.stages.{i}.up.bn."),
    ("decoder.layers.{i}.up.expand.3.", "decoder.stages.{i}.up.dwconv."),
    ("decoder.layers.{i}.up.norm.", "decoder.stages.{i}.up.norm."),
    ("decoder.layers.{i}.concat_layer.", "decoder.stages.{i}.fuse."),
    ("decoder.layers.{i}.vss_layer.blocks.{j}.op.", "decoder.stages.{i}.blocks.{j}.ssm."),
    ("decoder.layers.{i}.vss_layer.blocks.{j}.mlp.multiscale_conv.dw_convs.{k}.",
     "decoder.stages.{i}.blocks.{j}.mlp.dwconvs.{k}."),
    ("decoder.layers.{i}.vss_layer.blocks.{j}.", "decoder.stages.{i}.blocks.{j}."),
    ("decoder.out_layers.0.expand.0.", "decoder.head.proj."),
    ("decoder.out_layers.0.expand.1.", "decoder.head.bn."),
    ("decoder.out_layers.0.expand.3.", "decoder.head.dwconv."),
    ("decoder.out_layers.0.norm.", "decoder.head.norm."),
    ("decoder.out_layers.0.out.", "decoder.head.out."),
]


def _compile(template: str) -> re.Pattern:
    pattern = re.escape(template)
    for name in "ijk":
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>\\d+)")
    return re.compile(pattern)


_OFFICIAL_TO_OURS = [(_compile(src), dst) for src, dst in _KEY_RULES]
_OURS_TO_OFFICIAL = [(_compile(dst), src) for src, dst in _KEY_RULES]


def _rename(state_dict: Mapping[str, Tensor], rules, what: str) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    unmapped = []
    for key, value in state_dict.items():
        for pattern, template in rules:
            m = pattern.match(key)
            if m:
                out[template.format(**m.groupdict()) + key[m.end():]] = value
                break
        else:
            unmapped.append(key)
    if unmapped:
        raise CheckpointError(f"{len(unmapped)} keys are not part of the {what} layout: {_preview(unmapped)}")
    return out


def official_to_ours(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an official MSVM-UNet state dict (``encoder.layers.0.blocks.0.op...``) to ours."""
    return _rename(state_dict, _OFFICIAL_TO_OURS, "official MSVM-UNet")


def ours_to_official(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of :func:`official_to_ours` (exact round trip)."""
    return _rename(state_dict, _OURS_TO_OFFICIAL, "msvmunet")


def _preview(keys: list[str], n: int = 12) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


# --------------------------------------------------------------------------------------------
# reading files


def load_file(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with errors that say what to do."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, pickle with code, not a torch file ...
        raise CheckpointError(f"{path}: {_unreadable_reason(path, err)}") from None


def _unreadable_reason(path: Path, err: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in our words (never PyTorch's advice to
    load it unsafely)."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
    if isinstance(err, pickle.UnpicklingError) and found:
        return (f"not an msvmunet checkpoint: it holds a pickled Python object ({found.group(1)}), not only tensors "
                "and plain values; re-save only the state dict with torch.save(model.state_dict(), ...)")
    with open(path, "rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"
    if zipped:
        return "a damaged or truncated PyTorch checkpoint (copy or download it again)"
    return "not an msvmunet/PyTorch checkpoint (give the .pt file that training or 'msvmunet convert' wrote)"


def _as_obj(path_or_obj: Any) -> tuple[Any, str]:
    if isinstance(path_or_obj, (str, os.PathLike)):
        return load_file(path_or_obj), str(path_or_obj)
    return path_or_obj, "<in-memory checkpoint>"


def _tensor_dict(obj: Any, source: str) -> dict[str, Tensor]:
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{source}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{source}: entries that are not tensors: {_preview([str(k) for k in bad])}")
    return dict(obj)


def _strip_prefix(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    for prefix in ("_model.", "module.", "model."):
        if all(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def _official_state_dict(obj: Any, source: str) -> dict[str, Tensor]:
    """A raw state dict, a Lightning ``.ckpt`` ({"state_dict": {"_model.": ...}}) or {"model": ...}."""
    if isinstance(obj, Mapping):
        if obj.get("format") == FORMAT:
            raise CheckpointError(f"{source} is already an msvmunet checkpoint; load it with msvmunet.load_model")
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    return _strip_prefix(_tensor_dict(obj, source))


# --------------------------------------------------------------------------------------------
# configuration from shapes


def _count(keys: set[str], template: str) -> int:
    n = 0
    while template.format(n) in keys:
        n += 1
    return n


def _dt_rank(ranks: list[int], dims: list[int], where: str) -> int | str:
    if all(r == math.ceil(d / 16) for r, d in zip(ranks, dims)):
        return "auto"
    if len(set(ranks)) == 1:
        return ranks[0]
    raise CheckpointError(f"{where}: dt ranks {ranks} differ between stages and are not ceil(dim/16); unsupported")


def _ssm_shape(sd: dict[str, Tensor], prefix: str, dim: int, where: str) -> dict[str, Any]:
    in_proj = sd[prefix + "op.in_proj.weight"]
    d_inner = sd[prefix + "op.Ds"].shape[0] // 4
    if in_proj.shape[0] == 2 * d_inner:
        raise CheckpointError(f"{where}: the SS2D has a z-gate (in_proj gives 2 x d_inner); only the paper's 'v05_noz' blocks are supported")
    if prefix + "op.conv2d.bias" in sd:
        raise CheckpointError(f"{where}: the SS2D depth-wise conv has a bias; only the paper's bias-free conv is supported")
    return {
        "d_state": sd[prefix + "op.A_logs"].shape[1],
        "ssm_ratio": d_inner / dim,
        "rank": sd[prefix + "op.dt_projs_weight"].shape[2],
        "d_conv": sd[prefix + "op.conv2d.weight"].shape[-1],
        "mlp_ratio": sd[prefix + "mlp.fc1.weight"].shape[0] / dim,
    }


def _uniform(values: list[dict[str, Any]], key: str, where: str) -> Any:
    seen = {v[key] for v in values}
    if len(seen) != 1:
        raise CheckpointError(f"{where}: {key} differs between blocks ({sorted(seen)}); unsupported")
    return seen.pop()


def infer_official_config(state_dict: Mapping[str, Tensor]) -> ModelConfig:
    """Every hyper-parameter of an official MSVM-UNet from its state dict's shapes (official keys)."""
    sd = dict(state_dict)
    keys = set(sd)
    try:
        in_channels = sd["encoder.layer0.0.weight"].shape[1]
        embed_dim = sd["encoder.layer1.0.weight"].shape[0]
        stages = _count(keys, "encoder.layers.{}.blocks.0.norm.weight")
        depths = [_count(keys, f"encoder.layers.{i}.blocks.{{}}.norm.weight") for i in range(stages)]
        dims = [embed_dim * 2**i for i in range(stages)]
        enc = [_ssm_shape(sd, f"encoder.layers.{i}.blocks.{j}.", dims[i], "encoder")
               for i in range(stages) for j in range(depths[i])]
        dec_stages = _count(keys, "decoder.layers.{}.concat_layer.weight")
        dec_depths = [_count(keys, f"decoder.layers.{i}.vss_layer.blocks.{{}}.norm.weight") for i in range(dec_stages)]
        dec_dims = [dims[-2 - i] for i in range(dec_stages)]
        dec = [_ssm_shape(sd, f"decoder.layers.{i}.vss_layer.blocks.{j}.", dec_dims[i], "decoder")
               for i in range(dec_stages) for j in range(dec_depths[i])]
        kernels = tuple(
            sd[f"decoder.layers.0.vss_layer.blocks.0.mlp.multiscale_conv.dw_convs.{k}.weight"].shape[-1]
            for k in range(_count(keys, "decoder.layers.0.vss_layer.blocks.0.mlp.multiscale_conv.dw_convs.{}.weight"))
        )
        num_classes = sd["decoder.out_layers.0.out.weight"].shape[0]
    except KeyError as err:
        raise CheckpointError(
            f"not an official MSVM-UNet state dict: key {err.args[0]!r} is missing "
            "(expected keys like 'encoder.layer0.0.weight', 'decoder.out_layers.0.out.weight')"
        ) from None
    if stages < 2 or dec_stages != stages - 1:
        raise CheckpointError(f"inconsistent checkpoint: {stages} encoder stages but {dec_stages} decoder stages")
    enc_ranks = [sd[f"encoder.layers.{i}.blocks.0.op.dt_projs_weight"].shape[2] for i in range(stages)]
    dec_ranks = [sd[f"decoder.layers.{i}.vss_layer.blocks.0.op.dt_projs_weight"].shape[2] for i in range(dec_stages)]
    preset_rate = {p.encoder.depths: p.encoder.drop_path_rate for p in PRESETS.values()}
    encoder = EncoderConfig(
        embed_dim=embed_dim,
        depths=tuple(depths),
        in_channels=in_channels,
        d_state=_uniform(enc, "d_state", "encoder"),
        ssm_ratio=_uniform(enc, "ssm_ratio", "encoder"),
        dt_rank=_dt_rank(enc_ranks, dims, "encoder"),
        d_conv=_uniform(enc, "d_conv", "encoder"),
        mlp_ratio=_uniform(enc, "mlp_ratio", "encoder"),
        # not stored in weights: the official value for the preset depths, else the tiny one
        drop_path_rate=preset_rate.get(tuple(depths), 0.2),
    )
    decoder = DecoderConfig(
        depths=tuple(dec_depths),
        d_state=_uniform(dec, "d_state", "decoder"),
        ssm_ratio=_uniform(dec, "ssm_ratio", "decoder"),
        dt_rank=_dt_rank(dec_ranks, dec_dims, "decoder"),
        d_conv=_uniform(dec, "d_conv", "decoder"),
        mlp_ratio=_uniform(dec, "mlp_ratio", "decoder"),
        kernel_sizes=kernels,
    )
    return ModelConfig(encoder, decoder, num_classes)


def load_state_dict_checked(model: torch.nn.Module, state_dict: Mapping[str, Tensor], source: str) -> None:
    """Strict load that reports every missing, unexpected and mis-shaped key at once."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
              for k, v in state_dict.items() if k in own and v.shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {_preview(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_preview(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {_preview(shapes)}")
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=True)


def from_official_checkpoint(path_or_obj: str | os.PathLike | Mapping) -> MSVMUNet:
    """An :class:`MSVMUNet` in eval mode from a checkpoint of the official code.

    Accepts a raw state dict, a Lightning ``.ckpt`` (``{"state_dict": {"_model.encoder...": ...}}``)
    or ``{"model": state_dict}``, as a path or an object; the configuration is inferred from shapes.
    """
    obj, source = _as_obj(path_or_obj)
    official = _official_state_dict(obj, source)
    config = infer_official_config(official)
    model = MSVMUNet(config)
    load_state_dict_checked(model, official_to_ours(official), source)
    return model.eval()


def to_official_state_dict(model: MSVMUNet) -> dict[str, Tensor]:
    """The model's weights under the official key names (loadable by the official code)."""
    return ours_to_official(model.state_dict())


# --------------------------------------------------------------------------------------------
# VMamba ImageNet weights

VMAMBA_FILES = {
    (2, 2, 8, 2): "vssm1_tiny_0230s_ckpt_epoch_264.pth",
    (2, 2, 20, 2): "vssm1_small_0229s_ckpt_epoch_240.pth",
}
_VMAMBA_RULES = [
    ("patch_embed.0.", "encoder.layer0.0."),
    ("patch_embed.2.", "encoder.layer0.2."),
    ("patch_embed.5.", "encoder.layer1.0."),
    ("patch_embed.7.", "encoder.layer1.2."),
]


def _vmamba_to_official(key: str) -> str | None:
    if key.startswith("classifier.") or key in ("norm.weight", "norm.bias", "head.weight", "head.bias"):
        return None  # the ImageNet classifier is not part of the segmentation model
    for src, dst in _VMAMBA_RULES:
        if key.startswith(src):
            return dst + key[len(src):]
    m = re.match(r"layers\.(\d+)\.downsample\.", key)
    if m:
        return f"encoder.downsamples.{m.group(1)}." + key[m.end():]
    return "encoder." + key


def load_vmamba_encoder_weights(model: MSVMUNet, path_or_obj: str | os.PathLike | Mapping) -> None:
    """Load VMamba v2 ImageNet weights (e.g. ``vssm1_tiny_0230s_ckpt_epoch_264.pth``) into the encoder.

    Every encoder tensor must be present with the right shape; the ImageNet classifier is ignored.
    """
    obj, source = _as_obj(path_or_obj)
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    state = _strip_prefix(_tensor_dict(obj, source))
    want = VMAMBA_FILES.get(model.config.encoder.depths, "the VMamba v2 checkpoint of this encoder configuration")
    # The official README names vssm_tiny_0230_ckpt_epoch_262.pth: ssm_ratio 2, depths 2-2-5-2.
    in_proj = state.get("layers.0.blocks.0.op.in_proj.weight")
    if in_proj is not None and in_proj.shape[0] != model.encoder.stages[0].blocks[0].ssm.d_inner:
        raise CheckpointError(
            f"{source} is a VMamba checkpoint with SS2D inner width {in_proj.shape[0]} (ssm_ratio "
            f"{in_proj.shape[0] / in_proj.shape[1]:g}), but this model uses "
            f"ssm_ratio {model.config.encoder.ssm_ratio:g}. This is likely 'vssm_tiny_0230_ckpt_epoch_262.pth' "
            f"(named in the official README); MSVM-UNet needs '{want}'."
        )
    official = {}
    for key, value in state.items():
        target = _vmamba_to_official(key)
        if target is not None:
            official[target] = value
    try:
        ours = official_to_ours(official)
    except CheckpointError as err:
        raise CheckpointError(f"{source}: not a VMamba v2 checkpoint ({err}); MSVM-UNet needs '{want}'") from None
    encoder_state = {k[len("encoder."):]: v for k, v in ours.items()}
    try:
        load_state_dict_checked(model.encoder, encoder_state, source)
    except CheckpointError as err:
        raise CheckpointError(f"{err}. This encoder (depths {model.config.encoder.depths}) needs '{want}'.") from None


# --------------------------------------------------------------------------------------------
# our own format


def checkpoint_dict(model: MSVMUNet, *, to_cpu: bool = True, **extra: Any) -> dict[str, Any]:
    """A plain dict (loadable with ``weights_only=True``): format tag, config, weights, extras.

    ``to_cpu=False`` leaves the weights where they live (detached, not copied: no wait for the device), for a
    caller that snapshots and copies them itself (:class:`~msvmunet.engine.checkpointing.CheckpointWriter`)."""
    state = {k: v.detach().cpu() if to_cpu else v.detach() for k, v in model.state_dict().items()}
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_dict(), "state_dict": state, **extra}


def save_model(model: MSVMUNet, path: str | os.PathLike, **extra: Any) -> Path:
    """Write the model (and ``extra`` plain values) atomically: a temporary file, then a rename."""
    obj = checkpoint_dict(model, **extra)
    return atomic_write(path, lambda f: torch.save(obj, f))


def model_from_checkpoint(obj: Mapping[str, Any], source: str = "<checkpoint>") -> MSVMUNet:
    if not isinstance(obj, Mapping) or obj.get("format") != FORMAT:
        raise CheckpointError(
            f"{source} is not an msvmunet checkpoint (no format tag); for a checkpoint of the official "
            "code use msvmunet.from_official_checkpoint or 'msvmunet convert'"
        )
    if obj.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{source} was written by a newer msvmunet (format {obj['format_version']}); upgrade msvmunet")
    model = MSVMUNet(ModelConfig.from_dict(obj["config"]))
    load_state_dict_checked(model, obj["state_dict"], source)
    return model


def network_size(checkpoint: Mapping[str, Any], default: int | None = None) -> int | None:
    """The side the network was trained at (slices are resized to it): from the training configuration,
    else the stored preprocessing, else ``default`` (None: unknown, never guessed)."""
    size = (checkpoint.get("train_config") or {}).get("image_size") or (checkpoint.get("preprocessing") or {}).get("size")
    return int(size) if size else default


def load_model(path_or_obj: str | os.PathLike | Mapping) -> MSVMUNet:
    """An :class:`MSVMUNet` in eval mode from an msvmunet checkpoint (``save_model`` or training)."""
    obj, source = _as_obj(path_or_obj)
    return model_from_checkpoint(obj, source).eval()
