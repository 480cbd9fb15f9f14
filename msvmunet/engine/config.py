"""Training configuration: the paper's recipe as presets, overridable from YAML and flags."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from .compiling import TRAIN_INDUCTOR, check_inductor_options

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def _opt(default: Any, help: str) -> Any:
    """A field with its command-line help (the CLI builds its flags from these)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    # data -------------------------------------------------------------------------------------
    data: str = _opt("", "dataset root folder (Synapse, ACDC, nnU-Net raw, SSL4MIS ACDC or 2-D images; see "
                         "'msvmunet check-data')")
    dataset: str | None = _opt(None, "dataset format: synapse, acdc, nifti, ssl4mis or images (default: detected "
                                     "from the folder)")
    val_cases: list[str] | int | float = _opt(
        [], "training cases held out for model selection: names (comma-separated), a count, or a fraction "
            "(default: none; the final epoch is reported)")
    select_on_test: bool = _opt(
        False, "the paper's selection: validate on the TEST volumes every --val-every epochs and keep the best "
               "(optimistic; every report says so)")
    val_every: int = _opt(20, "epochs between validations")
    image_size: int = _opt(224, "network input size: slices are resized to this square")
    augment: bool = _opt(True, "the paper's augmentations (imgaug SomeOf(0-4) re-implemented on tensors)")
    noise: str = _opt("faithful", "additive-noise semantics: 'faithful' (the official code's) or 'corrected'")
    # model ------------------------------------------------------------------------------------
    model: str = _opt("tiny_0230s", "model name (tiny_0230s = the paper's, small_0229s, nano)")
    model_options: dict[str, Any] = _opt({}, "model overrides, e.g. {encoder: {drop_path_rate: 0.1}} (YAML)")
    pretrained_encoder: str | None = _opt(
        None, "VMamba ImageNet weights (vssm1_tiny_0230s_ckpt_epoch_264.pth), or 'none' to train from scratch; "
              "required: a missing file is an error")
    # recipe -----------------------------------------------------------------------------------
    epochs: int = _opt(300, "training epochs")
    batch_size: int = _opt(32, "global batch size (split evenly over the torchrun processes)")
    lr: float = _opt(5e-4, "AdamW learning rate")
    betas: tuple[float, float] = _opt((0.9, 0.999), "AdamW betas")
    eps: float = _opt(1e-8, "AdamW epsilon")
    weight_decay: float = _opt(1e-3, "AdamW weight decay (1e-3 Synapse, 1e-4 ACDC)")
    min_lr: float = _opt(1e-6, "cosine annealing (stepped per epoch) ends at this learning rate")
    ce_weight: float = _opt(0.4, "weight of the cross-entropy term of the loss")
    dice_weight: float = _opt(0.6, "weight of the soft Dice term of the loss")
    freeze_encoder_epochs: int = _opt(10, "the encoder is frozen for this many first epochs")
    # engine -----------------------------------------------------------------------------------
    output: str = _opt("runs/train", "run folder: config.yaml, last.pt, final.pt, best.pt, history.csv, tensorboard/")
    device: str = _opt("auto", "auto, cpu, cuda or cuda:N (torchrun: one GPU per process)")
    precision: str = _opt("auto", "auto (bf16 autocast on CUDA, fp32 on CPU), bf16, fp16 or fp32")
    num_workers: int = _opt(4, "data-loading worker processes")
    seed: int = _opt(42, "random seed (shuffling, augmentation, initialisation, held-out cases)")
    scan_backend: str = _opt("auto", "selective-scan backend: auto, triton, torch")
    compile: bool = _opt(
        True, "on CUDA, compile the model with torch.compile (fused LayerNorms, casts and element-wise operations: "
              "a faster step, after a first compilation of a few minutes that later runs on the machine reuse from "
              "the cache in ~/.cache/msvmunet, or $MSVMUNET_CACHE_DIR); ignored on CPU")
    inductor: dict[str, Any] = _opt(
        dict(TRAIN_INDUCTOR), "with compile: inductor settings for torch.compile (fields of torch._inductor.config); "
                              "the default autotunes the launch configurations of the fused element-wise and "
                              "reduction kernels (a longer first compilation, a faster step); {} for inductor's own")
    cuda_graph: bool = _opt(
        True, "on one CUDA GPU, replay the whole training step from a CUDA graph (much faster; the last partial "
              "batch of each epoch is dropped); ignored on CPU, under torchrun or with fp16")
    steps_per_epoch: int | None = _opt(None, "cap on steps per epoch (default: one pass over the data)")
    eval_batch_size: int = _opt(32, "slices per batch when validating")

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.noise not in ("faithful", "corrected"):
            raise ConfigError(f"noise must be 'faithful' or 'corrected', got {self.noise!r}")
        for name in ("epochs", "batch_size", "val_every", "image_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.freeze_encoder_epochs < 0:
            raise ConfigError(f"freeze_encoder_epochs must be >= 0, got {self.freeze_encoder_epochs}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ConfigError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}")
        self.inductor = check_inductor_options(self.inductor or {}, "inductor")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown training options {unknown}; known: {sorted(names)}")
        return cls(**data)

    def replace(self, **changes: Any) -> "TrainConfig":
        return TrainConfig.from_dict({**self.to_dict(), **changes})


PRESETS: dict[str, dict[str, Any]] = {
    # MSVM-UNet on Synapse, as in the official train_synapse.py
    "synapse": dict(output="runs/synapse", weight_decay=1e-3),
    # MSVM-UNet on ACDC, as in the official train_acdc.py
    "acdc": dict(output="runs/acdc", weight_decay=1e-4),
    # a small configuration that trains on the phantom in minutes on a CPU
    "demo": dict(
        output="runs/demo", model="nano", pretrained_encoder="none", epochs=40, batch_size=16,
        image_size=96, lr=3e-3, weight_decay=1e-4, freeze_encoder_epochs=0, num_workers=0,
        augment=False, val_every=10, eval_batch_size=16,
        model_options={"encoder": {"drop_path_rate": 0.0}, "decoder": {"drop_path_rate": 0.0}},
    ),
}


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value at the top level")
    return data


def resolve_config(preset: str | None = None, yaml_path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """Preset, then the YAML file, then explicit overrides (None values are ignored)."""
    values: dict[str, Any] = {}
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; available: {sorted(PRESETS)}")
        values.update(PRESETS[preset])
    if yaml_path:
        values.update(load_yaml(yaml_path))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(values)


def save_yaml(config: TrainConfig, path: str | Path) -> None:
    from ..data.io import write_text

    write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
