"""The blocks of MSVM-UNet, channel-last: SS2D, VSS blocks with a plain or multi-scale MLP, and
the large-kernel patch expanding of the decoder (LKPE x2, FLKPE x4 with the classifier)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.selective_scan import ss2d_scan
from .config import resolve_dt_rank
from .layers import DropPath, conv1x1_nhwc, depthwise_conv_nhwc, inverse_softplus


class SS2D(nn.Module):
    """2D selective scan (official ``SS2D`` with forward type ``v05_noz``, channel-first LayerNorm).

    1x1 in-projection (no bias) -> 3x3 depth-wise conv (no bias) -> SiLU -> four-direction
    selective scan (A = -exp(A_logs), delta = softplus(dt + dt_bias), D skip), summed per pixel
    -> LayerNorm -> 1x1 out-projection. No z-gate. x: (B, H, W, C) -> (B, H, W, C).
    """

    def __init__(self, dim: int, d_state: int = 1, ssm_ratio: float = 1.0, dt_rank: int = 6, d_conv: int = 3) -> None:
        super().__init__()
        d_inner = int(ssm_ratio * dim)
        self.d_state, self.dt_rank, self.d_inner = d_state, dt_rank, d_inner
        self.scan_backend = "auto"
        self.in_proj = nn.Linear(dim, d_inner, bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner, bias=False)
        k = 4
        # per direction: x -> (dt_rank + 2 d_state), initialised as four default nn.Linear layers
        bound = 1.0 / math.sqrt(d_inner)
        self.x_proj_weight = nn.Parameter(torch.empty(k, dt_rank + 2 * d_state, d_inner).uniform_(-bound, bound))
        # dt projection: uniform(+-rank^-0.5); bias so that softplus(bias) ~ logU(1e-3, 1e-1)
        std = dt_rank**-0.5
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, dt_rank).uniform_(-std, std))
        dt = torch.exp(torch.rand(k, d_inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
        self.dt_projs_bias = nn.Parameter(inverse_softplus(dt))
        # S4D-real initialisation, A = -[1, 2, ..., N]
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(k * d_inner, 1)
        self.A_logs = nn.Parameter(torch.log(a))
        self.Ds = nn.Parameter(torch.ones(k * d_inner))
        self.A_logs._no_weight_decay = True
        self.Ds._no_weight_decay = True
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.in_proj(x)
        x = F.silu(depthwise_conv_nhwc(x, self.conv2d.weight))
        y = ss2d_scan(
            x, self.x_proj_weight, self.dt_projs_weight, self.dt_projs_bias, self.A_logs, self.Ds,
            backend=self.scan_backend,
        )
        # y in x's 16-bit dtype, else float32 (float64 from the reference backend); LayerNorm in the weights' dtype
        y = self.out_norm(y.to(self.out_norm.weight.dtype)).to(x.dtype)
        return self.out_proj(y)


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2 (the VMamba MLP)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class MultiScaleMlp(nn.Module):
    """MS-FFN of the decoder: fc1 -> GELU -> x + dw1(x) + dw3(x) + dw5(x) -> fc2.

    The identity and the depth-wise kernels are summed into one kernel of the largest size, so the
    three convolutions run as one (the same linear map).
    """

    def __init__(self, dim: int, hidden: int, kernel_sizes: tuple[int, ...] = (1, 3, 5)) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconvs = nn.ModuleList(
            nn.Conv2d(hidden, hidden, k, padding=k // 2, groups=hidden, bias=False) for k in kernel_sizes
        )
        self.fc2 = nn.Linear(hidden, dim)

    def merged_kernel(self) -> Tensor:
        size = max(conv.kernel_size[0] for conv in self.dwconvs)
        weight = None
        for conv in self.dwconvs:
            p = (size - conv.kernel_size[0]) // 2
            w = F.pad(conv.weight, (p, p, p, p))
            weight = w if weight is None else weight + w
        identity = torch.zeros_like(weight)
        identity[:, :, size // 2, size // 2] = 1.0
        return weight + identity

    def forward(self, x: Tensor) -> Tensor:
        x = F.gelu(self.fc1(x))
        weight = self.merged_kernel()
        return self.fc2(depthwise_conv_nhwc(x, weight.to(x.dtype)))


class VSSBlock(nn.Module):
    """x + DropPath(SS2D(LN(x))), then x + DropPath(MLP(LN(x))). x: (B, H, W, C)."""

    def __init__(
        self,
        dim: int,
        *,
        d_state: int,
        ssm_ratio: float,
        dt_rank: int,
        d_conv: int,
        mlp_ratio: float,
        drop_path: float = 0.0,
        kernel_sizes: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.ssm = SS2D(dim, d_state=d_state, ssm_ratio=ssm_ratio, dt_rank=dt_rank, d_conv=d_conv)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = Mlp(dim, hidden) if kernel_sizes is None else MultiScaleMlp(dim, hidden, kernel_sizes)
        self.drop_path = DropPath(drop_path)

    @classmethod
    def from_config(cls, dim: int, config, drop_path: float, kernel_sizes: tuple[int, ...] | None = None) -> "VSSBlock":
        """A block of width ``dim`` with the SSM/MLP settings of an Encoder- or DecoderConfig."""
        return cls(
            dim,
            d_state=config.d_state,
            ssm_ratio=config.ssm_ratio,
            dt_rank=resolve_dt_rank(config.dt_rank, dim),
            d_conv=config.d_conv,
            mlp_ratio=config.mlp_ratio,
            drop_path=drop_path,
            kernel_sizes=kernel_sizes,
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.ssm(self.norm(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchExpand(nn.Module):
    """Large-kernel patch expanding: 1x1 conv (C -> C*expand) + BatchNorm + ReLU + 3x3 depth-wise
    conv, then a ``scale``x pixel shuffle in the official channel-last order
    ``b h w (p1 p2 c) -> b (h p1) (w p2) c`` (not ``nn.PixelShuffle``'s), then LayerNorm.

    LKPE is ``PatchExpand(C, scale=2, expand=2)``: (B, H, W, C) -> (B, 2H, 2W, C/2).
    """

    def __init__(self, dim: int, scale: int = 2, expand: int = 2) -> None:
        super().__init__()
        hidden = dim * expand
        if hidden % (scale * scale):
            raise ValueError(f"PatchExpand: {hidden} channels cannot be shuffled by {scale}x{scale}")
        self.scale = scale
        self.out_dim = hidden // (scale * scale)
        self.proj = nn.Conv2d(dim, hidden, 1)
        self.bn = nn.BatchNorm2d(hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.norm = nn.LayerNorm(self.out_dim)

    def expand(self, x: Tensor) -> Tensor:
        """(B, H, W, C) -> (B, H, W, scale, scale, out_dim): every sub-pixel's channels, before the shuffle."""
        x = conv1x1_nhwc(self.proj, x)
        x = self.bn(x.permute(0, 3, 1, 2))
        x = depthwise_conv_nhwc(F.relu(x).permute(0, 2, 3, 1), self.dwconv.weight, self.dwconv.bias)
        b, h, w, _ = x.shape
        return x.reshape(b, h, w, self.scale, self.scale, self.out_dim)

    @staticmethod
    def shuffle(x: Tensor) -> Tensor:
        """(B, H, W, s, s, C) -> (B, sH, sW, C): ``b h w (p1 p2 c) -> b (h p1) (w p2) c``."""
        b, h, w, s, _, c = x.shape
        return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h * s, w * s, c)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.shuffle(self.expand(x)))


class FinalPatchExpand(PatchExpand):
    """FLKPE: a x4 PatchExpand keeping C channels (C -> 16C -> shuffle), then a 1x1 conv to the classes.

    LayerNorm and the 1x1 conv act on each output pixel alone, so they run before the shuffle (on
    the 16 sub-pixels of every input pixel) and only the class scores are shuffled: the same
    function without moving the (B, 4H, 4W, C) tensor, the largest in the network.
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__(dim, scale=4, expand=16)
        self.out = nn.Conv2d(dim, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.shuffle(conv1x1_nhwc(self.out, self.norm(self.expand(x))))
