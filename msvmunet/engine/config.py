"""Training configuration: the paper's recipe as presets, overridable from YAML and flags."""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from ..data.datasets import ALIASES as FORMAT_ALIASES, FORMATS
from ..errors import ConfigError
from ..models.msvm_unet import model_config
from .compiling import TRAIN_INDUCTOR, check_inductor_options

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
SCAN_BACKENDS = ("auto", "torch", "triton", "reference")
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
_BOOLEANS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}

Check = Callable[[str, Any], Any]


def default_num_workers() -> int:
    """Data-loading workers sized to this host: the usable cores of each process (torchrun shares them)
    less one for the training loop itself, at most 16 (they read, resize and augment whole batches)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE") or 1))
    return max(0, min(cores // processes - 1, 16))


def _bad(name: str, expected: str, value: Any) -> ConfigError:
    """The one-line error for option ``name``; ``key`` lets the caller name the YAML file it came from."""
    err = ConfigError(f"option {name} (--{name.replace('_', '-')}): expected {expected}, got {value!r}")
    err.key = name
    return err


def _whole(minimum: int | None = None) -> Check:
    expected = "a whole number" + (f" >= {minimum}" if minimum is not None else "")

    def check(name: str, value: Any) -> int:
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise _bad(name, expected, value) from None
        if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
            raise _bad(name, expected, value)
        return value
    return check


def _number(low: float = -math.inf, high: float = math.inf, low_open: bool = False, high_open: bool = True) -> Check:
    """A finite float in the interval given (open or closed at each end)."""
    expected = "a number" + (f" {'>' if low_open else '>='} {low:g}" if low > -math.inf else "") + (
        f"{' and' if low > -math.inf else ''} {'<' if high_open else '<='} {high:g}" if high < math.inf else "")

    def check(name: str, value: Any) -> float:
        number = value
        if isinstance(value, str):  # YAML reads 5e-4 (no dot) as text
            try:
                number = float(value)
            except ValueError:
                raise _bad(name, expected, value) from None
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise _bad(name, expected, value)
        if number < low or (low_open and number == low) or number > high or (high_open and number == high):
            raise _bad(name, expected, value)
        return float(number)
    return check


def _boolean(name: str, value: Any) -> bool:
    if isinstance(value, str) and value.strip().lower() in _BOOLEANS:
        return _BOOLEANS[value.strip().lower()]
    if not isinstance(value, bool):
        raise _bad(name, "true or false", value)
    return value


def _text(choices: Sequence[str] = (), pattern: re.Pattern | None = None, empty: bool = False,
          expected: str = "a text") -> Check:
    """Text: one of ``choices``, or matching ``pattern`` (described by ``expected``), or any (``empty`` or not)."""
    expected = f"one of {', '.join(choices)}" if choices else expected

    def check(name: str, value: Any) -> str:
        if not isinstance(value, str) or (choices and value not in choices) or (not empty and not value.strip()) \
                or (pattern is not None and not pattern.fullmatch(value)):
            raise _bad(name, expected, value)
        return value
    return check


def _optional(check: Check) -> Check:
    """None (YAML null; from a flag the text null, or none where ``check`` refuses it) or what ``check`` accepts."""
    def optional(name: str, value: Any) -> Any:
        words = ("null", "~", "none") if isinstance(value, str) else ()
        if value is None or (words and value.strip().lower() in words[:2]):
            return None
        try:
            return check(name, value)
        except ConfigError:
            if words and value.strip().lower() == "none":
                return None
            raise
    return optional


def _workers(name: str, value: Any) -> int:
    """'auto' becomes this host's number (:func:`default_num_workers`), so config.yaml records it."""
    if value == "auto":
        return default_num_workers()
    try:
        return _whole(0)(name, value)
    except ConfigError:
        raise _bad(name, "auto or a whole number >= 0", value) from None


def _betas(name: str, value: Any) -> tuple[float, float]:
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _bad(name, "two numbers in [0, 1), e.g. [0.9, 0.999]", value)
    return tuple(_number(0.0, 1.0)(name, v) for v in value)


def _val_cases(name: str, value: Any) -> list[str] | int | float:
    """Names (a list, or comma-separated text), a count >= 1, or a fraction in (0, 1); none: []."""
    expected = "case names, a count >= 1 or a fraction between 0 and 1"
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        for parse in (int, float):
            try:
                value = parse(text)
                break
            except ValueError:
                pass
        else:
            return [c.strip() for c in text.split(",") if c.strip()]
    if isinstance(value, (list, tuple)):
        if not all(isinstance(c, str) for c in value):
            raise _bad(name, expected, value)
        return list(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(name, expected, value)
    if isinstance(value, int) and value >= 0:
        return value or []
    if isinstance(value, float) and 0 < value < 1:
        return value
    raise _bad(name, expected, value)


def _mapping(name: str, value: Any) -> dict[str, Any]:
    """A mapping, or its YAML text (flags): ``{encoder: {drop_path_rate: 0.1}}``."""
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            raise _bad(name, "a YAML mapping such as {encoder: {drop_path_rate: 0.1}}", value) from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(name, "a mapping such as {encoder: {drop_path_rate: 0.1}}", value)
    return value


def _opt(default: Any, help: str, check: Check) -> Any:
    """A field with its command-line help (the CLI builds its flags from these) and its check."""
    metadata = {"help": help, "check": check}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Every value is checked (type and range) when the configuration is made, whatever its source."""

    # data -------------------------------------------------------------------------------------
    data: str = _opt("", "dataset root folder (Synapse, ACDC, nnU-Net raw, SSL4MIS ACDC or 2-D images; see "
                         "'msvmunet check-data')", _text(empty=True))
    dataset: str | None = _opt(None, "dataset format: synapse, acdc, nifti (nnunet), ssl4mis or images (default: "
                                     "detected from the folder)", _optional(_text(FORMATS + tuple(FORMAT_ALIASES))))
    val_cases: list[str] | int | float = _opt(
        [], "training cases held out for model selection: names (comma-separated), a count, or a fraction "
            "(default: none; the final epoch is reported)", _val_cases)
    select_on_test: bool = _opt(
        False, "the paper's selection: validate on the TEST volumes every --val-every epochs and keep the best "
               "(optimistic; every report says so)", _boolean)
    val_every: int = _opt(20, "epochs between validations", _whole(1))
    image_size: int = _opt(224, "network input size: slices are resized to this square", _whole(1))
    augment: bool = _opt(True, "the paper's augmentations (imgaug SomeOf(0-4) re-implemented on tensors)", _boolean)
    noise: str = _opt("faithful", "additive-noise semantics: 'faithful' (the official code's) or 'corrected'",
                      _text(("faithful", "corrected")))
    # model ------------------------------------------------------------------------------------
    model: str = _opt("tiny_0230s", "model name (tiny_0230s = the paper's, small_0229s, nano)", _text())
    model_options: dict[str, Any] = _opt(
        {}, "model overrides (YAML), e.g. '{encoder: {drop_path_rate: 0.1}}'", _mapping)
    pretrained_encoder: str | None = _opt(
        None, "VMamba ImageNet weights (vssm1_tiny_0230s_ckpt_epoch_264.pth), or 'none' to train from scratch; "
              "required: a missing file is an error", _optional(_text()))
    # recipe -----------------------------------------------------------------------------------
    epochs: int = _opt(300, "training epochs", _whole(1))
    batch_size: int = _opt(32, "global batch size (split evenly over the torchrun processes)", _whole(1))
    lr: float = _opt(5e-4, "AdamW learning rate", _number(0.0, low_open=True))
    betas: tuple[float, float] = _opt((0.9, 0.999), "AdamW betas", _betas)
    eps: float = _opt(1e-8, "AdamW epsilon", _number(0.0, low_open=True))
    weight_decay: float = _opt(1e-3, "AdamW weight decay (1e-3 Synapse, 1e-4 ACDC)", _number(0.0))
    min_lr: float = _opt(1e-6, "cosine annealing (stepped per epoch) ends at this learning rate", _number(0.0))
    ce_weight: float = _opt(0.4, "weight of the cross-entropy term of the loss", _number(0.0))
    dice_weight: float = _opt(0.6, "weight of the soft Dice term of the loss", _number(0.0))
    freeze_encoder_epochs: int = _opt(10, "the encoder is frozen for this many first epochs", _whole(0))
    # engine -----------------------------------------------------------------------------------
    output: str = _opt("runs/train", "run folder: config.yaml, last.pt, final.pt, best.pt, history.csv, tensorboard/",
                       _text())
    device: str = _opt("auto", "auto, cpu, cuda or cuda:N (torchrun: one GPU per process)", _text(pattern=_DEVICE, expected="a device: auto, cpu, cuda or cuda:N"))
    precision: str = _opt("auto", "auto (bf16 autocast on CUDA, fp32 on CPU), bf16, fp16 or fp32", _text(PRECISIONS))
    num_workers: int | str = _opt(
        "auto", f"data-loading worker processes: auto (the usable cores less one, at most 16: "
                f"{default_num_workers()} here) or a number; config.yaml records the number used", _workers)
    seed: int = _opt(42, "random seed (shuffling, augmentation, initialisation, held-out cases)", _whole())
    scan_backend: str = _opt("auto", "selective-scan backend: auto, triton, torch", _text(SCAN_BACKENDS))
    compile: bool = _opt(
        True, "on CUDA, compile the model with torch.compile (fused LayerNorms, casts and element-wise operations: "
              "a faster step, after a first compilation of a few minutes that later runs on the machine reuse from "
              "the cache in ~/.cache/msvmunet, or $MSVMUNET_CACHE_DIR); ignored on CPU", _boolean)
    inductor: dict[str, Any] = _opt(
        dict(TRAIN_INDUCTOR), "with compile: inductor settings for torch.compile (fields of torch._inductor.config); "
                              "the default autotunes the launch configurations of the fused element-wise and "
                              "reduction kernels (a longer first compilation, a faster step); {} for inductor's own",
        lambda name, value: check_inductor_options(value or {}, name))
    cuda_graph: bool = _opt(
        True, "on one CUDA GPU, replay the whole training step from a CUDA graph (much faster; the last partial "
              "batch of each epoch is dropped); ignored on CPU, under torchrun or with fp16", _boolean)
    steps_per_epoch: int | None = _opt(None, "cap on steps per epoch (default: one pass over the data)",
                                       _optional(_whole(1)))
    eval_batch_size: int = _opt(32, "slices per batch when validating", _whole(1))

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, f.metadata["check"](f.name, getattr(self, f.name)))
        if self.ce_weight == 0 and self.dice_weight == 0:
            err = ConfigError("options ce_weight and dice_weight are both 0: the loss would be zero; "
                              "give one of them a positive weight")
            err.key = "dice_weight"
            raise err
        unknown = sorted(set(self.model_options) - {"encoder", "decoder", "in_channels"})
        if unknown:
            raise _bad("model_options", "the keys encoder, decoder or in_channels (the classes come from the data)",
                       self.model_options)
        for name, options in (("model", {}), ("model_options", self.model_options)):
            try:
                model_config(self.model, **options)
            except ConfigError as err:
                raise _bad(name, f"a valid model ({err})", getattr(self, name)) from None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            hints = [f"{k} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(k, names, 1)) else k
                     for k in unknown]
            raise ConfigError(f"unknown training options {', '.join(hints)}; known: {', '.join(sorted(names))}")
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
    from_file = load_yaml(yaml_path) if yaml_path else {}
    values.update(from_file)
    given = {k: v for k, v in overrides.items() if v is not None}
    values.update(given)
    try:
        return TrainConfig.from_dict(values)
    except ConfigError as err:
        if getattr(err, "key", None) in set(from_file) - set(given):
            raise ConfigError(f"{yaml_path}: {err}") from None
        raise


def save_yaml(config: TrainConfig, path: str | Path) -> None:
    from ..data.io import write_text

    write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
