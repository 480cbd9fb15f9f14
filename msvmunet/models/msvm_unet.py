"""MSVM-UNet = VMamba v2 encoder + multi-scale VSS decoder, and the model registry."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..ops.selective_scan import BACKENDS
from .blocks import SS2D
from .config import ALIASES, PRESETS, DecoderConfig, EncoderConfig, ModelConfig, _from_dict
from .decoder import Decoder
from .encoder import VSSEncoder


class MSVMUNet(nn.Module):
    """x: (B, C, H, W) -> logits (B, num_classes, H, W).

    A 1-channel input is repeated to 3 channels when the stem takes 3 (as the official model does
    for its ImageNet stem). Sides that are not multiples of ``config.size_multiple`` (32 for four
    stages) are zero-padded at the bottom/right and the logits cropped back.

    ``freeze_encoder(True)`` runs the encoder without recording gradients and stops its parameters
    from requiring them (the recipe's first epochs). The flag is a module attribute, so that a
    ``torch.compile``d model recompiles when it changes (its guards do not see ``requires_grad``).
    """

    encoder_frozen: bool = False

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        self.encoder = VSSEncoder(self.config.encoder)
        self.decoder = Decoder(self.encoder.out_channels, self.config.decoder, self.config.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_halves(x, self.encode, self.decode)

    def forward_halves(self, x: Tensor, encode, decode) -> Tensor:
        """:meth:`forward` with its two halves given as functions (each compiled on its own, for training).

        Under a frozen encoder the features reach the decoder as leaves that require gradients: the
        decoder's backward is then the same computation whether the encoder is frozen or not, so a
        compiled decoder is compiled once for both phases of the recipe (its gradients for the features
        are computed and dropped, a few small matrix products)."""
        features = encode(x)
        if self.encoder_frozen and torch.is_grad_enabled():
            features = [f.detach().requires_grad_() for f in features]
        return decode(features, x.shape[-2], x.shape[-1])

    def encode(self, x: Tensor) -> list[Tensor]:
        """Input checks, 1 -> 3 channels, padding to ``size_multiple``, the encoder (no gradient recorded when frozen)."""
        if x.dim() != 4:
            raise ValueError(f"MSVMUNet expects (B, C, H, W) input, got shape {tuple(x.shape)}")
        expected = self.config.encoder.in_channels
        if x.shape[1] != expected:
            if x.shape[1] == 1 and expected == 3:
                x = x.expand(-1, 3, -1, -1)
            else:
                raise ValueError(f"MSVMUNet expects {expected} input channels (or 1, repeated), got {x.shape[1]}")
        height, width = x.shape[-2:]
        m = self.config.size_multiple
        pad_h, pad_w = -height % m, -width % m
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.encoder_frozen):
            return self.encoder(x)

    def decode(self, features: list[Tensor], height: int, width: int) -> Tensor:
        """The decoder; logits (B, num_classes, height, width), cropped back to the unpadded input."""
        logits = self.decoder(features)  # (B, H, W, classes)
        return logits[:, :height, :width].permute(0, 3, 1, 2).contiguous()

    def freeze_encoder(self, frozen: bool = True) -> "MSVMUNet":
        """Freeze (or unfreeze) the encoder for training: no gradients recorded through it or for it."""
        self.encoder_frozen = bool(frozen)
        self.encoder.requires_grad_(not frozen)
        return self

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def set_scan_backend(self, backend: str) -> "MSVMUNet":
        """Choose the selective-scan backend of every SS2D: 'auto', 'torch', 'triton' or 'reference'."""
        if backend != "auto" and backend not in BACKENDS:
            raise ConfigError(f"unknown scan backend {backend!r}; choose one of {('auto',) + BACKENDS}")
        for module in self.modules():
            if isinstance(module, SS2D):
                module.scan_backend = backend
        return self

    def unfreeze_encoder(self) -> "MSVMUNet":
        return self.freeze_encoder(False)


def list_models() -> list[str]:
    """Names accepted by :func:`create_model` (aliases included)."""
    return sorted(set(PRESETS) | set(ALIASES))


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """The preset ``name`` with top-level (``num_classes``, ``in_channels``) and nested
    (``encoder={...}``, ``decoder={...}``) overrides."""
    key = ALIASES.get(name, name)
    if key not in PRESETS:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    config = PRESETS[key]
    encoder = dict(config.encoder.__dict__)
    if "in_channels" in overrides:
        encoder["in_channels"] = overrides.pop("in_channels")
    encoder = _from_dict(EncoderConfig, overrides.pop("encoder", None) or {}, "encoder", base=encoder)
    decoder = _from_dict(DecoderConfig, overrides.pop("decoder", None) or {}, "decoder", base=config.decoder.__dict__)
    num_classes = overrides.pop("num_classes", config.num_classes)
    if overrides:
        raise ConfigError(f"unknown model options {sorted(overrides)}; use num_classes, in_channels, encoder={{...}}, decoder={{...}}")
    return ModelConfig(encoder, decoder, num_classes)


def create_model(
    name: str = "tiny_0230s",
    *,
    num_classes: int = 9,
    in_channels: int = 3,
    pretrained_encoder: str | os.PathLike | dict | None = None,
    scan_backend: str = "auto",
    **overrides: Any,
) -> MSVMUNet:
    """Build MSVM-UNet by name (``list_models()``), optionally with VMamba ImageNet encoder weights.

    >>> model = create_model("tiny_0230s", num_classes=9)
    """
    config = model_config(name, num_classes=num_classes, in_channels=in_channels, **overrides)
    model = MSVMUNet(config).set_scan_backend(scan_backend)
    if pretrained_encoder is not None:
        from .checkpoints import load_vmamba_encoder_weights

        load_vmamba_encoder_weights(model, pretrained_encoder)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MSVMUNet", "count_parameters", "create_model", "list_models", "model_config"]
