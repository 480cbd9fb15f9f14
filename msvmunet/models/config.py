"""Typed configuration of MSVM-UNet and the named presets.

Defaults are the paper's model: a VMamba v2 ``tiny_0230s`` encoder (embed 96, depths 2-2-8-2,
d_state 1, ssm_ratio 1, dt_rank ceil(d/16), 3x3 depth-wise conv without bias, no z-gate,
MLP ratio 4, drop-path 0.2) and a decoder of three MSVSS stages of depth 2 (drop-path 0.2).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Union

from ..errors import ConfigError

DtRank = Union[int, str]


def resolve_dt_rank(dt_rank: DtRank, dim: int) -> int:
    """The official rule: ``"auto"`` means ceil(d_model / 16)."""
    return math.ceil(dim / 16) if dt_rank == "auto" else int(dt_rank)


def _check_positive(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ConfigError(f"{owner}.{name} must be > 0, got {value!r}")


def _check_dt_rank(owner: str, dt_rank: DtRank) -> None:
    if dt_rank != "auto" and not (isinstance(dt_rank, int) and dt_rank > 0):
        raise ConfigError(f"{owner}.dt_rank must be 'auto' or a positive int, got {dt_rank!r}")


@dataclass(frozen=True)
class EncoderConfig:
    """VMamba v2 encoder: a two-conv patch embedding (stride 4 in all), then ``len(depths)`` stages
    of VSS blocks at widths embed_dim * 2**i, joined by conv-3x3-stride-2 downsampling."""

    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 8, 2)
    in_channels: int = 3
    d_state: int = 1
    ssm_ratio: float = 1.0
    dt_rank: DtRank = "auto"
    d_conv: int = 3
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.2

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        if len(self.depths) < 2 or any(d < 1 for d in self.depths):
            raise ConfigError(f"encoder.depths needs >= 2 stages of >= 1 block, got {self.depths}")
        if self.embed_dim % 2:
            raise ConfigError(f"encoder.embed_dim must be even (the stem halves it), got {self.embed_dim}")
        _check_positive("encoder", embed_dim=self.embed_dim, in_channels=self.in_channels,
                        d_state=self.d_state, ssm_ratio=self.ssm_ratio, d_conv=self.d_conv,
                        mlp_ratio=self.mlp_ratio)
        _check_dt_rank("encoder", self.dt_rank)
        if not 0 <= self.drop_path_rate < 1:
            raise ConfigError(f"encoder.drop_path_rate must be in [0, 1), got {self.drop_path_rate}")

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))

    def drop_path_rates(self) -> list[list[float]]:
        """Official schedule: linspace(0, rate, sum(depths)) over the blocks in order."""
        return _split(_linspace(0.0, self.drop_path_rate, sum(self.depths)), self.depths)


@dataclass(frozen=True)
class DecoderConfig:
    """Three (len(encoder.depths) - 1) up-stages, deepest first: LKPE x2 upsampling, concatenation
    with the skip, a 1x1 fuse, then ``depths[i]`` MSVSS blocks; a final FLKPE x4 head."""

    depths: tuple[int, ...] = (2, 2, 2)
    d_state: int = 1
    ssm_ratio: float = 1.0
    dt_rank: DtRank = "auto"
    d_conv: int = 3
    mlp_ratio: float = 4.0
    kernel_sizes: tuple[int, ...] = (1, 3, 5)
    drop_path_rate: float = 0.2

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "kernel_sizes", tuple(int(k) for k in self.kernel_sizes))
        if any(d < 1 for d in self.depths):
            raise ConfigError(f"decoder.depths must all be >= 1, got {self.depths}")
        if any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            raise ConfigError(f"decoder.kernel_sizes must be odd and positive, got {self.kernel_sizes}")
        _check_positive("decoder", d_state=self.d_state, ssm_ratio=self.ssm_ratio,
                        d_conv=self.d_conv, mlp_ratio=self.mlp_ratio)
        _check_dt_rank("decoder", self.dt_rank)
        if not 0 <= self.drop_path_rate < 1:
            raise ConfigError(f"decoder.drop_path_rate must be in [0, 1), got {self.drop_path_rate}")

    def drop_path_rates(self) -> list[list[float]]:
        """linspace(rate, 0, sum(depths)) over the blocks, deepest stage first.

        For the paper's depths (2, 2, 2) this is exactly the official schedule
        (0.2, 0.16 | 0.12, 0.08 | 0.04, 0.0). The official slicing indexes a fixed list of
        2 * stages rates with offsets that include an unused ``depths[0]``, so it only works for
        equal depths; here any depths get the same linear decay.
        """
        return _split(_linspace(self.drop_path_rate, 0.0, sum(self.depths)), self.depths)


@dataclass(frozen=True)
class ModelConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    num_classes: int = 9

    def __post_init__(self) -> None:
        if isinstance(self.encoder, dict):
            object.__setattr__(self, "encoder", _from_dict(EncoderConfig, self.encoder, "encoder"))
        if isinstance(self.decoder, dict):
            object.__setattr__(self, "decoder", _from_dict(DecoderConfig, self.decoder, "decoder"))
        if self.num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {self.num_classes}")
        stages = len(self.encoder.depths)
        if len(self.decoder.depths) != stages - 1:
            raise ConfigError(
                f"decoder.depths needs one entry per up-stage ({stages - 1} for {stages} encoder "
                f"stages), got {self.decoder.depths}"
            )

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this (stride 4 stem, then x2 per later stage)."""
        return 4 * 2 ** (len(self.encoder.depths) - 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (lists, not tuples), so checkpoints load with ``weights_only=True``."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        return _from_dict(cls, data, "model")

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


def _from_dict(cls, data: dict[str, Any], owner: str, base: dict[str, Any] | None = None):
    """``cls`` from the keys of ``data`` (over those of ``base``); unknown keys and wrong types named."""
    if not isinstance(data, dict):
        raise ConfigError(f"{owner} config must be a mapping of key: value, got {data!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown {owner} config keys {unknown}; known keys: {sorted(names)}")
    try:
        return cls(**{**(base or {}), **data})
    except (TypeError, ValueError) as err:  # e.g. a text where a number belongs
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{owner} config {data}: {err}") from None


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _linspace(start: float, stop: float, n: int) -> list[float]:
    # float32 values, as torch.linspace(...).item() gives in the official code
    import torch

    return [x.item() for x in torch.linspace(start, stop, n)]


def _split(values: list[float], depths: tuple[int, ...]) -> list[list[float]]:
    out, i = [], 0
    for d in depths:
        out.append(values[i : i + d])
        i += d
    return out


PRESETS: dict[str, ModelConfig] = {
    # the paper's model
    "tiny_0230s": ModelConfig(EncoderConfig(depths=(2, 2, 8, 2), drop_path_rate=0.2)),
    # the larger encoder of the official code
    "small_0229s": ModelConfig(EncoderConfig(depths=(2, 2, 20, 2), drop_path_rate=0.3)),
    # not in the paper: a small model of the same code path, for demos and tests on CPU
    "nano": ModelConfig(EncoderConfig(embed_dim=32, depths=(1, 1, 2, 1)), DecoderConfig(depths=(1, 1, 1))),
}

ALIASES: dict[str, str] = {
    "tiny": "tiny_0230s",
    "msvm_unet_tiny": "tiny_0230s",
    "vssm1_tiny_0230s": "tiny_0230s",
    "small": "small_0229s",
    "msvm_unet_small": "small_0229s",
    "vssm1_small_0229s": "small_0229s",
}
