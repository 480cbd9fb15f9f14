"""The MSVM-UNet decoder: LKPE up-stages with MSVSS blocks, and the FLKPE head."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .blocks import FinalPatchExpand, PatchExpand, VSSBlock
from .config import DecoderConfig


class UpStage(nn.Module):
    """LKPE x2 (C -> C/2), concatenate the skip, 1x1 fuse (C -> C/2), MSVSS blocks."""

    def __init__(self, in_dim: int, out_dim: int, config: DecoderConfig, rates: list[float]) -> None:
        super().__init__()
        self.up = PatchExpand(in_dim, scale=2, expand=2)
        if self.up.out_dim != out_dim:
            raise ValueError(f"UpStage: LKPE gives {self.up.out_dim} channels, the skip has {out_dim}")
        self.fuse = nn.Linear(2 * out_dim, out_dim)
        self.blocks = nn.ModuleList(VSSBlock.from_config(out_dim, config, rate, config.kernel_sizes) for rate in rates)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.fuse(torch.cat([self.up(x), skip], dim=-1))
        for block in self.blocks:
            x = block(x)
        return x


class Decoder(nn.Module):
    """features (channel-last, shallow to deep) -> logits (B, H, W, num_classes), H = 4 x the first map."""

    def __init__(self, encoder_dims: tuple[int, ...], config: DecoderConfig, num_classes: int) -> None:
        super().__init__()
        dims = tuple(reversed(encoder_dims))
        rates = config.drop_path_rates()
        self.stages = nn.ModuleList(
            UpStage(dims[i], dims[i + 1], config, rates[i]) for i in range(len(dims) - 1)
        )
        self.head = FinalPatchExpand(dims[-1], num_classes)

    def forward(self, features: list[Tensor]) -> Tensor:
        x = features[-1]
        for stage, skip in zip(self.stages, reversed(features[:-1])):
            x = stage(x, skip)
        return self.head(x)
