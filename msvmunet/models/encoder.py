"""The VMamba v2 encoder of MSVM-UNet (official ``vssm1_tiny_0230s`` / ``small_0229s`` code path)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import VSSBlock
from .config import EncoderConfig
from .layers import conv_nhwc, init_vmamba_


class PatchEmbed(nn.Module):
    """Two 3x3 stride-2 convolutions with LayerNorm (+ GELU between): (B, C, H, W) -> (B, H/4, W/4, E)."""

    def __init__(self, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, embed_dim // 2, 3, stride=2, padding=1)
        self.norm1 = nn.LayerNorm(embed_dim // 2)
        self.conv2 = nn.Conv2d(embed_dim // 2, embed_dim, 3, stride=2, padding=1)
        self.norm2 = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = F.gelu(self.norm1(self.conv1(x).permute(0, 2, 3, 1)))
        return self.norm2(conv_nhwc(self.conv2, x))


class Downsample(nn.Module):
    """3x3 stride-2 convolution then LayerNorm (VMamba ``downsample v3``): (B, H, W, C) -> (B, H/2, W/2, C')."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, out_dim, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(conv_nhwc(self.conv, x))


class Stage(nn.Module):
    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class VSSEncoder(nn.Module):
    """Returns one channel-last feature map per stage: (B, H/4, W/4, E), (B, H/8, W/8, 2E), ..."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        dims = config.dims
        self.stem = PatchEmbed(config.in_channels, config.embed_dim)
        rates = config.drop_path_rates()
        self.stages = nn.ModuleList(
            Stage([VSSBlock.from_config(dim, config, rate) for rate in rates[i]])
            for i, dim in enumerate(dims)
        )
        self.downsamples = nn.ModuleList(Downsample(dims[i], dims[i + 1]) for i in range(len(dims) - 1))
        init_vmamba_(self)

    @property
    def out_channels(self) -> tuple[int, ...]:
        return self.config.dims

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        features = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            features.append(x)
            if i < len(self.downsamples):
                x = self.downsamples[i](x)
        return features
