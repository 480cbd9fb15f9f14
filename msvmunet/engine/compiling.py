"""Inductor settings for ``torch.compile``: checked against ``torch._inductor.config``, parsed from
``FIELD=VALUE`` text, and the training default.

``TRAIN_INDUCTOR`` is what ``msvmunet train --compile`` uses unless told otherwise. Autotuning the launch
configurations (block sizes, warps) of inductor's fused element-wise and reduction kernels took the
compiled training step of tiny_0230s from 30.24 to 29.65 ms on an H200 (bf16, batch 32, 224^2, CUDA
graph; BENCHMARKS.md); the first compilation benchmarks a few configurations per kernel instead of one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError

Setting = bool | int | float | str

TRAIN_INDUCTOR: dict[str, Setting] = {"max_autotune_pointwise": True}

_EXAMPLE = "e.g. combo_kernels or max_autotune_pointwise"


def _default(key: str) -> Setting | None:
    """The default of a bool / number / text field of torch._inductor.config, or None if there is none."""
    from torch._inductor import config

    default = getattr(config, key, None) if key and "." not in key else None
    return default if isinstance(default, (bool, int, float, str)) else None


def _fits(value: Any, default: Setting) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def check_inductor_options(options: Mapping[str, Any], where: str = "inductor") -> dict[str, Setting]:
    """A checked copy of ``options``: every key a bool, number or text setting of torch._inductor.config,
    every value of that setting's type. ``where`` names the option in the error."""
    if not isinstance(options, Mapping):
        raise ConfigError(f"{where}: expected a mapping of inductor setting: value ({_EXAMPLE}), got {options!r}")
    checked: dict[str, Setting] = {}
    for key, value in options.items():
        default = _default(str(key))
        if default is None:
            raise ConfigError(f"{where}: {key!r} is not a bool, number or text setting of torch._inductor.config "
                              f"({_EXAMPLE})")
        if not _fits(value, default):
            raise ConfigError(f"{where}: {key} takes a value of type {type(default).__name__}, got {value!r}")
        checked[key] = float(value) if isinstance(default, float) else value
    return checked


def parse_inductor_items(items: list[str], where: str = "--inductor") -> dict[str, Setting]:
    """``FIELD=VALUE`` strings -> checked inductor options, each value parsed as the type of the setting's
    default (bools as 1/0/true/false)."""
    options: dict[str, Setting] = {}
    for item in items:
        key, _, text = item.partition("=")
        default = _default(key)
        if not text or default is None:
            raise ConfigError(f"{where} {item!r}: expected FIELD=VALUE with FIELD a bool, number or text setting "
                              "of torch._inductor.config (e.g. combo_kernels=1)")
        try:
            if isinstance(default, bool):
                if text.lower() not in ("0", "1", "true", "false"):
                    raise ValueError(text)
                options[key] = text.lower() in ("1", "true")
            else:
                options[key] = type(default)(text)
        except ValueError:
            raise ConfigError(f"{where} {item!r}: {key} takes a value of type {type(default).__name__}") from None
    return options


def compile_cache_dir() -> Path:
    """Where compiled kernels are kept between runs: ``$MSVMUNET_CACHE_DIR``, else ``$XDG_CACHE_HOME/msvmunet``,
    else ``~/.cache/msvmunet``."""
    import os

    root = os.environ.get("MSVMUNET_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "msvmunet"
    return Path(root)


def use_compile_caches() -> Path:
    """Point inductor's and Triton's on-disk caches at :func:`compile_cache_dir` (unless the user set
    ``TORCHINDUCTOR_CACHE_DIR`` / ``TRITON_CACHE_DIR``), so that a second run on the same machine reuses
    the first run's compiled graphs and kernels instead of compiling again. Returns the folder."""
    import os

    root = compile_cache_dir()
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(root / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(root / "triton"))
    return root
