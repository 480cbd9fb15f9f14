"""The paper's augmentations, batched on tensors, on whatever device the batch is on.

The official code runs, per training slice, imgaug's

    SomeOf((0, 4), [Flipud(0.5), Fliplr(0.5), AdditiveGaussianNoise(scale=0.005 * 255),
                    GaussianBlur(sigma=1.0), LinearContrast((0.5, 1.5), per_channel=0.5),
                    Affine(scale={"x": (0.5, 2), "y": (0.5, 2)}), Affine(rotate=(-40, 40)),
                    Affine(shear=(-16, 16)), PiecewiseAffine(scale=(0.008, 0.03)),
                    Affine(translate_percent={"x": (-0.2, 0.2), "y": (-0.2, 0.2)})],
           random_order=True)

then resizes to 224 (image cubic, label nearest) and normalises with (x - 0.5) / 0.5.
:class:`Augmenter` reproduces these semantics for a batch ``(B, C, H, W)`` with labels ``(B, H, W)``:

* per sample, a count n uniform in ``min_ops..max_ops`` and n distinct operations in random order;
  each picked operation keeps its own randomness (a picked flip flips with p = 0.5);
* each operation resamples the image in turn, as imgaug does (bilinear, zero fill outside);
  labels move with the nearest input pixel and zero fill, i.e. the official one-hot map warped
  with order 0 and argmax'ed back; they stay integers in range;
* imgaug's float semantics, established from its source: ``AdditiveGaussianNoise`` adds
  N(0, 1.275) *in the image's own units* (a [0, 1] image drowns in it), and ``LinearContrast``
  scales around the float dtype's centre 0, i.e. ``alpha * x``. ``mode="faithful"`` does exactly
  that. ``mode="corrected"`` uses what the recipe means for 8-bit images, mapped to [0, 1]:
  noise std 0.005 and contrast around 0.5;
* Gaussian blur: imgaug's OpenCV kernel (size max(5, 3.3 sigma) rounded to odd, reflect-101
  border). Blur and noise act per pixel, so they depend on the resolution they run at:
  augmenting a 224 batch made from 512 slices, set ``blur_reference_size=512`` to keep the
  blur's physical extent (sigma 1 at 512 = sigma 0.44 at 224);
* Affine follows imgaug 0.4: rotation and shear about the image centre, one shear angle used
  for both the x and the y shear (skimage's pre-0.19 shear matrix), x/y scale and translation
  sampled independently;
* PiecewiseAffine: a 4 x 4 grid of points spanning the image, each moved by N(0, s * size),
  s ~ U(0.008, 0.03), clipped into the image; the displacement between points is interpolated
  bilinearly (imgaug/skimage split each cell into two affine triangles instead).

Everything random comes from one ``torch.Generator`` (or seed); the same generator state and
device give the same batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .resize import resize_images, resize_labels

OPS = ("flipud", "fliplr", "noise", "blur", "contrast", "scale", "rotate", "shear", "piecewise", "translate")
GEOMETRIC = ("scale", "rotate", "shear", "piecewise", "translate")
MODES = ("faithful", "corrected")


@dataclass(frozen=True)
class AugmentConfig:
    """Parameters of the paper's augmentation (defaults = the official values)."""

    mode: str = "faithful"
    ops: tuple[str, ...] = OPS
    min_ops: int = 0
    max_ops: int = 4
    flip_p: float = 0.5
    noise_scale: float = 0.005 * 255       # imgaug's value; "corrected" divides it by 255
    blur_sigma: float = 1.0
    blur_reference_size: int | None = None  # sigma is in pixels of an image of this height
    contrast: tuple[float, float] = (0.5, 1.5)
    scale: tuple[float, float] = (0.5, 2.0)
    rotate: tuple[float, float] = (-40.0, 40.0)        # degrees
    shear: tuple[float, float] = (-16.0, 16.0)         # degrees
    piecewise_scale: tuple[float, float] = (0.008, 0.03)
    piecewise_grid: int = 4
    translate: tuple[float, float] = (-0.2, 0.2)       # fraction of the width / height
    out_size: int | None = None            # resize after augmenting (image bicubic, label nearest)

    def __post_init__(self) -> None:
        for name in ("ops", "contrast", "scale", "rotate", "shear", "piecewise_scale", "translate"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.mode not in MODES:
            raise ConfigError(f"AugmentConfig.mode={self.mode!r}; use one of {MODES}")
        unknown = [op for op in self.ops if op not in OPS]
        if unknown or len(set(self.ops)) != len(self.ops):
            raise ConfigError(f"AugmentConfig.ops: {list(self.ops)} has unknown or repeated names; choose from {OPS}")
        if not 0 <= self.min_ops <= self.max_ops:
            raise ConfigError(f"AugmentConfig: need 0 <= min_ops ({self.min_ops}) <= max_ops ({self.max_ops})")
        if self.piecewise_grid < 2:
            raise ConfigError("AugmentConfig.piecewise_grid must be at least 2")

    @property
    def noise_std(self) -> float:
        return self.noise_scale if self.mode == "faithful" else self.noise_scale / 255.0

    @property
    def contrast_center(self) -> float:
        return 0.0 if self.mode == "faithful" else 0.5

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AugmentConfig":
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"AugmentConfig: unknown key(s) {sorted(unknown)}")
        return cls(**data)


def normalize(images: torch.Tensor, mean: float = 0.5, std: float = 0.5) -> torch.Tensor:
    """The network's input normalisation: ``(x - mean) / std`` (official: 0.5 / 0.5)."""
    return (images - mean) / std


class _Rng:
    """Draws from one generator (or the global RNG) and puts the result on the batch's device.

    The plan of operations is drawn on the host (``plan_generator``), so that choosing which
    samples an operation touches never reads a value back from the GPU: with a CPU generator (or
    none) it is the same generator; with a CUDA generator it is a CPU generator seeded from that
    generator's seed and offset (host-side values), so the same generator state gives the same plan.
    """

    def __init__(self, generator: torch.Generator | int | None, device: torch.device) -> None:
        if isinstance(generator, int):
            generator = torch.Generator(device=device).manual_seed(generator)
        self.generator = generator
        self.device = device
        self.source = generator.device if generator is not None else device
        self.plan_generator = generator
        if generator is not None and generator.device.type != "cpu":
            seed = hash((generator.initial_seed(), generator.get_offset())) % 2**63
            self.plan_generator = torch.Generator().manual_seed(seed)
        elif generator is None and device.type != "cpu":
            self.plan_generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,)).item()))

    def rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator, device=self.source).to(self.device)

    def host_rand(self, *shape: int) -> torch.Tensor:
        """Uniform draws on the CPU (for the plan)."""
        return torch.rand(shape, generator=self.plan_generator)

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, device=self.source).to(self.device)

    def uniform(self, lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * self.rand(*shape)


def _to_device(index: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU index tensor on ``device`` without waiting for the device (pinned, non-blocking copy)."""
    if device.type == "cpu":
        return index
    return index.pin_memory().to(device, non_blocking=True)


class Augmenter:
    """``Augmenter(config)(images (B, C, H, W) float, labels (B, H, W) int64, generator=None)``.

    Returns new tensors (the inputs are not modified): images float, labels int64, both of
    size ``config.out_size`` when set. Run it on the batch's device; not yet normalised.
    """

    def __init__(self, config: AugmentConfig | None = None) -> None:
        self.config = config or AugmentConfig()

    def plan(self, batch: int, generator: torch.Generator | int | None = None,
             device: torch.device | str = "cpu") -> torch.Tensor:
        """(B, max_ops) int64 on the CPU: indices into ``config.ops`` in the order applied, -1 = none.

        A picked flip that does not fire (p = 1 - flip_p) is already replaced by -1 here.
        """
        return self._plan(batch, _Rng(generator, torch.device(device)))

    def _plan(self, batch: int, rng: _Rng) -> torch.Tensor:
        cfg = self.config
        k = len(cfg.ops)
        slots = min(cfg.max_ops, k)
        order = torch.argsort(rng.host_rand(batch, k), dim=1)[:, :slots]
        count = (cfg.min_ops + (rng.host_rand(batch) * (cfg.max_ops - cfg.min_ops + 1)).floor()).long()
        count = count.clamp(max=slots)
        fires = rng.host_rand(batch, slots) < cfg.flip_p
        plan = order.clone()
        plan[torch.arange(slots, device=plan.device)[None, :] >= count[:, None]] = -1
        flips = torch.tensor([i for i, op in enumerate(cfg.ops) if op in ("flipud", "fliplr")],
                             device=plan.device, dtype=torch.long)
        is_flip = (plan[..., None] == flips).any(-1) if len(flips) else torch.zeros_like(fires)
        plan[is_flip & ~fires] = -1
        return plan

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator | int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if images.ndim != 4 or labels.ndim != 3 or images.shape[0] != labels.shape[0] \
                or images.shape[-2:] != labels.shape[-2:]:
            raise ConfigError(f"Augmenter: expected images (B, C, H, W) and labels (B, H, W) of the same "
                              f"B, H, W; got {tuple(images.shape)} and {tuple(labels.shape)}")
        device = images.device
        rng = _Rng(generator, device)
        images = images.float().clone() if not images.is_floating_point() else images.clone()
        labels = labels.long().clone()
        plan = self._plan(images.shape[0], rng)
        # every (slot, operation) group's sample indices, found on the host, sent to the device in one copy
        groups = []
        for slot in range(plan.shape[1]):
            for k, name in enumerate(self.config.ops):
                rows = torch.nonzero(plan[:, slot] == k).flatten()
                if len(rows):
                    groups.append((slot, name, rows))
        flat = _to_device(torch.cat([r for _, _, r in groups]), device) if groups else None
        start = 0
        for slot in range(plan.shape[1]):
            geometric = []
            while groups and groups[0][0] == slot:
                _, name, rows = groups.pop(0)
                rows, start = flat[start:start + len(rows)], start + len(rows)
                if name in GEOMETRIC:
                    geometric.append((name, rows))
                else:
                    self._apply_pointwise(name, images, labels, rows, rng)
            if geometric:
                self._apply_geometric(geometric, images, labels, rng)
        if self.config.out_size is not None:
            images = resize_images(images, self.config.out_size)
            labels = resize_labels(labels, self.config.out_size)
        return images, labels

    # ------------------------------------------------------------------ per-pixel and flips

    def _apply_pointwise(self, name: str, images: torch.Tensor, labels: torch.Tensor,
                         rows: torch.Tensor, rng: _Rng) -> None:
        cfg = self.config
        x = images[rows]
        if name in ("flipud", "fliplr"):
            dim = -2 if name == "flipud" else -1
            images[rows] = x.flip(dim)
            labels[rows] = labels[rows].flip(dim)
        elif name == "noise":
            images[rows] = x + cfg.noise_std * rng.randn(*x.shape)
        elif name == "blur":
            images[rows] = gaussian_blur(x, self._blur_sigma(x.shape[-2]))
        elif name == "contrast":
            alpha = rng.uniform(*cfg.contrast, len(rows)).view(-1, 1, 1, 1)
            c = cfg.contrast_center
            images[rows] = c + alpha * (x - c)

    def _blur_sigma(self, height: int) -> float:
        ref = self.config.blur_reference_size
        return self.config.blur_sigma * (height / ref if ref else 1.0)

    # ------------------------------------------------------------------ geometric

    def _apply_geometric(self, groups: list[tuple[str, torch.Tensor]], images: torch.Tensor,
                         labels: torch.Tensor, rng: _Rng) -> None:
        """One resampling for every sample whose operation in this slot moves pixels."""
        device = images.device
        h, w = images.shape[-2:]
        rows = torch.cat([r for _, r in groups])
        n = len(rows)
        matrix = torch.eye(2, device=device).repeat(n, 1, 1)       # forward map, centred pixel units
        shift = torch.zeros(n, 2, device=device)
        displacement = None
        start = 0
        for name, members in groups:
            sl = slice(start, start + len(members))
            start += len(members)
            if name == "piecewise":
                if displacement is None:
                    displacement = torch.zeros(n, h, w, 2, device=device)
                displacement[sl] = self._piecewise(len(members), h, w, rng)
            else:
                matrix[sl], shift[sl] = self._affine(name, len(members), h, w, rng)
        # output pixel p samples input A^-1 (p - t); in grid_sample's [-1, 1] units p = D u.
        half = torch.stack([torch.full((), w / 2.0, device=device), torch.full((), h / 2.0, device=device)])
        det = matrix[:, 0, 0] * matrix[:, 1, 1] - matrix[:, 0, 1] * matrix[:, 1, 0]
        inv = torch.stack([torch.stack([matrix[:, 1, 1], -matrix[:, 0, 1]], -1),
                           torch.stack([-matrix[:, 1, 0], matrix[:, 0, 0]], -1)], -2) / det[:, None, None]
        theta = torch.empty(n, 2, 3, device=device)
        theta[:, :, :2] = inv * half[None, None, :] / half[None, :, None]
        theta[:, :, 2] = -(inv @ shift[..., None])[..., 0] / half
        grid = _affine_grid(theta, h, w)
        if displacement is not None:
            grid = grid + displacement / half
        images[rows] = F.grid_sample(images[rows], grid, mode="bilinear", padding_mode="zeros",
                                     align_corners=False)
        moved = F.grid_sample(labels[rows][:, None].float(), grid, mode="nearest", padding_mode="zeros",
                              align_corners=False)
        labels[rows] = moved[:, 0].round().long()

    def _affine(self, name: str, n: int, h: int, w: int, rng: _Rng) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward (n, 2, 2) matrices and (n, 2) shifts in pixels about the image centre, (x, y) order."""
        cfg = self.config
        a = torch.eye(2, device=rng.device).repeat(n, 1, 1)
        t = torch.zeros(n, 2, device=rng.device)
        if name == "scale":
            a[:, 0, 0] = rng.uniform(*cfg.scale, n)
            a[:, 1, 1] = rng.uniform(*cfg.scale, n)
        elif name == "rotate":
            r = torch.deg2rad(rng.uniform(*cfg.rotate, n))
            a = torch.stack([torch.stack([r.cos(), -r.sin()], -1), torch.stack([r.sin(), r.cos()], -1)], -2)
        elif name == "shear":
            # imgaug 0.4: y-shear (conjugated by 90 degree rotations) then x-shear, same angle s,
            # with skimage's shear matrix [[1, -sin s], [0, cos s]]: the product below.
            s = torch.deg2rad(rng.uniform(*cfg.shear, n))
            sin, cos = s.sin(), s.cos()
            a = torch.stack([torch.stack([cos - sin * sin, -sin], -1), torch.stack([cos * sin, cos], -1)], -2)
        elif name == "translate":
            t[:, 0] = rng.uniform(*cfg.translate, n) * w
            t[:, 1] = rng.uniform(*cfg.translate, n) * h
        return a, t

    def _piecewise(self, n: int, h: int, w: int, rng: _Rng) -> torch.Tensor:
        """(n, H, W, 2) displacement (x, y) in pixels: output pixel p samples input p + d(p)."""
        g = self.config.piecewise_grid
        sigma = rng.uniform(*self.config.piecewise_scale, n).view(n, 1, 1)
        out = []
        for size, shape in ((w, (1, 1, g)), (h, (1, g, 1))):          # x varies along columns, y along rows
            along = torch.linspace(0, size, g, device=rng.device).view(shape)
            moved = (along + rng.randn(n, g, g) * sigma * size).clamp(0, size - 1)
            out.append(moved - along)                                 # (n, rows, cols)
        wy, wx = _hat_weights(h, g, rng.device), _hat_weights(w, g, rng.device)
        dx = torch.einsum("yk,nkl,xl->nyx", wy, out[0], wx)
        dy = torch.einsum("yk,nkl,xl->nyx", wy, out[1], wx)
        return torch.stack([dx, dy], -1)


def _affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``F.affine_grid(theta, [n, 1, h, w], align_corners=False)`` by broadcasting: the same (n, h, w, 2)
    sampling points (to float rounding), 20x faster on a CPU than its batched matrix product."""
    x = (torch.arange(w, device=theta.device, dtype=theta.dtype) * 2 + 1) / w - 1
    y = ((torch.arange(h, device=theta.device, dtype=theta.dtype) * 2 + 1) / h - 1)[:, None]
    t = theta[:, :, :, None, None]
    return (t[:, :, 0] * x + t[:, :, 1] * y + t[:, :, 2]).permute(0, 2, 3, 1)


def _hat_weights(size: int, g: int, device: torch.device) -> torch.Tensor:
    """(size, g) linear interpolation weights of pixel centres 0..size-1 between points linspace(0, size, g)."""
    u = torch.arange(size, device=device, dtype=torch.float32) * ((g - 1) / size)
    return (1 - (u[:, None] - torch.arange(g, device=device)[None, :]).abs()).clamp(min=0)


def gaussian_kernel_size(sigma: float) -> int:
    """imgaug's OpenCV kernel size for ``sigma``: max(5, k * sigma) made odd (k = 3.3, 2.9, 2.6)."""
    factor = 3.3 if sigma < 3.0 else 2.9 if sigma < 5.0 else 2.6
    size = int(max(factor * sigma, 5))
    return size + 1 if size % 2 == 0 else size


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, C, H, W) -> same, separable Gaussian of ``sigma`` pixels, reflect-101 border."""
    if sigma <= 1e-3:
        return images
    size = gaussian_kernel_size(sigma)
    x = torch.arange(size, device=images.device, dtype=images.dtype) - (size - 1) / 2
    kernel = torch.exp(-x * x / (2 * sigma * sigma))
    kernel = kernel / kernel.sum()
    pad = size // 2
    w = images.shape[-1]
    # Sums of shifted copies: much faster than conv2d for one channel on a CPU.
    x = F.pad(images, (pad, pad, 0, 0), mode="reflect")
    rows = sum(kernel[k] * x[..., k:k + w] for k in range(size))
    h = images.shape[-2]
    y = F.pad(rows, (0, 0, pad, pad), mode="reflect")
    return sum(kernel[k] * y[..., k:k + h, :] for k in range(size))
