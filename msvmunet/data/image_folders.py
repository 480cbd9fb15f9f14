"""2-D image-folder datasets: ISIC 2016-2018, Kvasir-SEG, CVC-ClinicDB, BUSI, or your own images and masks.

::

    ROOT/images/*.jpg + ROOT/masks/*.png         sibling folders, matching names (image/label, imgs/labels, ...)
    ROOT/{train,val,test}/images, .../masks      splits from subfolders (also training/, valid/, testing/ ...)
    ROOT/{train,val,test}.txt or .list           or splits from list files of image names
    ROOT/ISIC2018_Task1-2_Training_Input + ISIC2018_Task1_Training_GroundTruth (also _Validation_, _Test_;
        ISIC 2017's ISIC-2017_Training_Data + ISIC-2017_Training_Part1_GroundTruth): the challenge downloads
    ROOT/benign/benign (1).png, benign (1)_mask.png, benign (1)_mask_1.png
                                                 masks beside their images (BUSI); several masks are merged
    ROOT/classes.json                            optional class table: {"background": 0, "polyp": 255}
                                                 or {"background": [0, 0, 0], "tumour": [255, 0, 0], ...}

A mask is named as its image, or as its image plus a suffix (``_segmentation`` as ISIC writes it,
``_mask``, ``_label``, ``_gt``, ``_anno``) and an optional number (``_1``: another mask of the same
image). Each image is a case of one slice. Without ``classes.json`` the table is found in the masks:
grey 0/255 -> binary, grey 0..K-1 -> K classes, colours -> one class each (black first). JPEG masks
are lossy: each pixel takes the nearest value of the table (0/255 masks are thresholded at 128);
lossless masks must match the table exactly. RGB images have 3 channels, grey ones 1.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import DataError
from .base import FileSlices, SliceDataset, Volume, select_cases
from .io import read_list
from .preprocessing import Preprocessing

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LOSSY = (".jpg", ".jpeg")
IMAGE_DIRS = ("images", "image", "imgs", "img", "inputs", "input", "original")
MASK_DIRS = ("masks", "mask", "labels", "label", "gts", "gt", "groundtruth", "ground_truth", "ground truth",
             "annotations", "segmentations")
SPLIT_DIRS = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}
MASK_NAME = re.compile(r"^(?P<stem>.+?)_(?:segmentation|mask|label|gt|anno)(?:_\d+)?$", re.IGNORECASE)
CHALLENGE_SPLITS = {"train": "training", "val": "validation", "test": "test"}
IGNORED = re.compile(r"_superpixels$", re.IGNORECASE)  # ISIC 2017's data folders hold these beside the images
CLASSES_FILE = "classes.json"
SAMPLE = 64  # masks (and images) looked at to find the class table and the channel count


@dataclass(frozen=True)
class Pair:
    """One image and its mask files (several are merged)."""

    name: str
    image: Path
    masks: tuple[Path, ...]


# ----------------------------------------------------------------------------- finding pairs


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith(".") and not IGNORED.search(p.stem))


def _child(folder: Path, names: Sequence[str]) -> Path | None:
    for p in sorted(folder.iterdir()) if folder.is_dir() else ():
        if p.is_dir() and p.name.lower() in names:
            return p
    return None


def _match(images: list[Path], masks: list[Path], where: str) -> tuple[list[Pair], list[str]]:
    """Pairs by name (exact, else image name + mask suffix), and a line per kind of leftover."""
    by_stem: dict[str, list[Path]] = {}
    by_base: dict[str, list[Path]] = {}
    for m in masks:
        by_stem.setdefault(m.stem, []).append(m)
        found = MASK_NAME.match(m.stem)
        if found:
            by_base.setdefault(found["stem"], []).append(m)
    pairs, used, lonely, problems = [], set(), [], []
    for image in images:
        own = by_stem.get(image.stem) or by_base.get(image.stem)
        if own:
            pairs.append(Pair(image.stem, image, tuple(sorted(own))))
            used.update(own)
        else:
            lonely.append(image.name)
    orphans = [m.name for m in masks if m not in used]
    if lonely:
        problems.append(f"{where}: {len(lonely)} image(s) without a mask, e.g. {lonely[:10]}; add their masks "
                        "or move them out")
    if orphans:
        problems.append(f"{where}: {len(orphans)} mask(s) without an image, e.g. {orphans[:10]}; add their "
                        "images or move them out")
    return pairs, problems


def find_pairs(folder: Path) -> tuple[list[Pair], list[str]]:
    """Image/mask pairs under ``folder``: sibling image and mask folders, or masks beside their images
    (in ``folder`` or its subfolders, e.g. BUSI's benign/ malignant/ normal/)."""
    image_dir, mask_dir = _child(folder, IMAGE_DIRS), _child(folder, MASK_DIRS)
    if image_dir is not None and mask_dir is not None:
        return _match(_files(image_dir), _files(mask_dir), f"{image_dir} + {mask_dir.name}/")
    pairs, problems = [], []
    for sub in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
        files = _files(sub)
        named = {p: m["stem"] for p in files if (m := MASK_NAME.match(p.stem))}
        bases = set(named.values())
        masks = [p for p in named if p.stem not in bases]  # "a_gt.png" beside "a_gt_mask.png" is an image
        if masks:
            found, trouble = _match([p for p in files if p not in masks], masks, str(sub))
            pairs += found
            problems += trouble
    return pairs, problems


def challenge_dirs(root: Path) -> dict[str, tuple[Path, Path]]:
    """ISIC's downloads: {split: (images, masks)} from folder names holding training / validation / test
    and Input or _Data (images) or GroundTruth (masks)."""
    dirs = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    out = {}
    for split, word in CHALLENGE_SPLITS.items():
        names = [(d, d.name.lower().replace("-", "_")) for d in dirs if word in d.name.lower()]
        images = [d for d, n in names if "input" in n or n.endswith("_data")]
        masks = [d for d, n in names if "groundtruth" in n.replace("_", "")]
        if len(images) == 1 and len(masks) == 1:
            out[split] = (images[0], masks[0])
    return out


def _has_pairs(folder: Path) -> bool:
    if not folder.is_dir():
        return False
    if _child(folder, IMAGE_DIRS) is not None and _child(folder, MASK_DIRS) is not None:
        return True
    subs = [folder, *(p for p in folder.iterdir() if p.is_dir())]
    return any(MASK_NAME.match(p.stem) for sub in subs for p in _files(sub))


def _split_dir(root: Path, split: str) -> Path | None:
    return next((root / d for d in SPLIT_DIRS[split] if (root / d).is_dir()), None)


def is_image_folders(root: Path) -> bool:
    dirs = [d for s in SPLIT_DIRS if (d := _split_dir(root, s)) is not None]
    return _has_pairs(root) or any(_has_pairs(d) for d in dirs) or bool(challenge_dirs(root))


# ----------------------------------------------------------------------------- reading pictures


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
        img.load()
        return img
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"{path}: unreadable image ({err}); save it again as PNG or JPEG") from None


def _is_colour(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.mode in ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr")
    except (OSError, ValueError):
        return False  # reported when the image is read


def read_image(path: Path, channels: int) -> np.ndarray:
    """(H, W) for ``channels=1`` or (3, H, W) float32 in [0, 1]."""
    img = _open(path)
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        array = np.asarray(img, dtype=np.float32)
        array = array / (65535.0 if array.max() > 255 else 255.0)
        return array if channels == 1 else np.repeat(array[None], 3, axis=0)
    array = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 255.0
    return array if channels == 1 else np.ascontiguousarray(array.transpose(2, 0, 1))


def _mask_values(path: Path) -> np.ndarray:
    """The raw mask: (H, W) grey values, or (H, W, 3) colours (palette and RGB masks that are not grey)."""
    img = _open(path)
    if path.suffix.lower() in LOSSY:
        return np.asarray(img.convert("L"))
    if img.mode in ("P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "LA"):
        rgb = np.asarray(img.convert("RGB"))
        grey = (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
        return rgb[..., 0] if grey else rgb
    if img.mode == "1":
        return np.asarray(img.convert("L"))
    return np.asarray(img)


@dataclass(frozen=True)
class ClassTable:
    """Class names and the mask value of each: grey levels (ints) or colours ((r, g, b))."""

    names: tuple[str, ...]
    values: tuple

    @property
    def dtype(self) -> type:
        return np.uint8 if len(self.values) <= 256 else np.int64

    @property
    def colour(self) -> bool:
        return isinstance(self.values[0], tuple)

    def decode(self, raw: np.ndarray, lossy: bool, where: str) -> np.ndarray:
        """Raw mask values -> (H, W) class indices (uint8 up to 256 classes); a value in no class is an error."""
        if self.colour and raw.ndim == 2:
            raw = np.repeat(raw[..., None], 3, axis=-1)
        if not self.colour and raw.ndim == 3:
            raise DataError(f"{where}: a colour mask, but the class table holds grey values {list(self.values)}; "
                            f"list the colours in {CLASSES_FILE}")
        raw = raw.astype(np.int64)
        codes = (raw[..., 0] << 16 | raw[..., 1] << 8 | raw[..., 2]) if self.colour else raw
        table = np.array([(v[0] << 16 | v[1] << 8 | v[2]) if self.colour else v for v in self.values])
        if lossy:  # the nearest table value
            points = raw.reshape(*raw.shape[:2], -1)[..., None, :]
            ref = np.array([v if self.colour else (v,) for v in self.values])
            return ((points - ref) ** 2).sum(-1).argmin(-1).astype(self.dtype)
        order = np.argsort(table)
        pos = np.clip(np.searchsorted(table[order], codes), 0, len(table) - 1)
        bad = table[order][pos] != codes
        if bad.any():
            y, x = (int(i[0]) for i in np.nonzero(bad))
            value = tuple(int(v) for v in raw[y, x]) if self.colour else int(raw[y, x])
            raise DataError(f"{where}: mask value {value} at pixel (y={y}, x={x}) is not a class of "
                            f"{dict(zip(self.names, self.values))}; fix the mask or add the value to {CLASSES_FILE}")
        return order[pos].astype(self.dtype)


def read_class_table(path: Path) -> ClassTable:
    try:
        table = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: unreadable class table ({err}); write {{\"background\": 0, \"lesion\": 255}}") from None
    ok = isinstance(table, dict) and len(table) >= 2 and (
        all(isinstance(v, int) for v in table.values())
        or all(isinstance(v, list) and len(v) == 3 and all(isinstance(c, int) for c in v) for v in table.values()))
    if not ok:
        raise DataError(f"{path}: needs at least two classes, each a grey value or an [r, g, b] colour, e.g. "
                        "{\"background\": 0, \"lesion\": 255}")
    values = tuple(v if isinstance(v, int) else tuple(v) for v in table.values())
    if len(set(values)) != len(values):
        raise DataError(f"{path}: two classes share a value; give each class its own value")
    return ClassTable(tuple(table), values)


def infer_class_table(masks: Sequence[Path], where: str) -> ClassTable:
    """The class table found in (a sample of) the masks: binary, index 0..K-1 or colours."""
    greys, colours, lossy = set(), set(), False
    for path in masks:
        raw = _mask_values(path)
        lossy |= path.suffix.lower() in LOSSY
        if raw.ndim == 3:
            colours.update(map(tuple, np.unique(raw.reshape(-1, 3), axis=0).tolist()))
        elif path.suffix.lower() not in LOSSY:
            greys.update(int(v) for v in np.unique(raw))
    if colours:
        found = sorted(colours | {(g, g, g) for g in greys} | {(0, 0, 0)})
        return ClassTable(("background", *(f"#{r:02x}{g:02x}{b:02x}" for r, g, b in found[1:])), tuple(found))
    if greys <= {0, 255}:  # lossy masks are taken as binary
        return ClassTable(("background", "foreground"), (0, 255))
    if max(greys) < 255 and not lossy:
        k = max(max(greys) + 1, 2)
        return ClassTable(("background", *(f"class{i}" for i in range(1, k))), tuple(range(k)))
    raise DataError(f"{where}: mask values {sorted(greys)[:12]} are neither binary (0/255) nor class indices "
                    f"0..K-1; write a {CLASSES_FILE} naming each value")


def _spread(items: Sequence, n: int) -> list:
    if len(items) <= n:
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, n).round()]


# ----------------------------------------------------------------------------- the dataset


class ImageFolderData:
    """A folder of 2-D images and masks; splits ``train`` and, when the layout says so, ``val`` and ``test``."""

    kind = "images"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._pairs: dict[str, dict[str, Pair]] = {}
        self._problems: list[str] = []
        split_dirs = {s: d for s in SPLIT_DIRS if (d := _split_dir(self.root, s)) is not None and _has_pairs(d)}
        challenge = {} if split_dirs else challenge_dirs(self.root)
        if split_dirs:
            for split, folder in split_dirs.items():
                self._pairs[split] = self._keep(*find_pairs(folder))
        elif challenge:
            for split, (images, masks) in challenge.items():
                self._pairs[split] = self._keep(*_match(_files(images), _files(masks), f"{images} + {masks.name}/"))
        else:
            everything = self._keep(*find_pairs(self.root))
            lists = {s: f for s in SPLIT_DIRS for name in SPLIT_DIRS[s] for ext in (".txt", ".list")
                     if (f := self.root / f"{name}{ext}").is_file()}
            for split, list_file in lists.items():
                wanted = [_stem(n) for n in read_list(list_file)]
                missing = [n for n in wanted if n not in everything]
                if missing:
                    self._problems.append(f"{list_file}: {len(missing)} name(s) with no image and mask, e.g. "
                                          f"{missing[:10]}; fix the list or restore the files")
                self._pairs[split] = {n: everything[n] for n in wanted if n in everything}
            if not lists:
                self._pairs["train"] = everything
        self._check_disjoint()
        self.splits = tuple(s for s in SPLIT_DIRS if self._pairs.get(s))
        if not self.splits:
            raise DataError(f"{self.root}: no image/mask pairs found" + (f" ({self._problems[0]})" if self._problems
                                                                        else ""))
        every = [p for s in self.splits for p in self._pairs[s].values()]
        table_file = self.root / CLASSES_FILE
        self.table = read_class_table(table_file) if table_file.is_file() else infer_class_table(
            [m for p in _spread(every, SAMPLE) for m in p.masks], str(self.root))
        colour = any(_is_colour(p.image) for p in _spread(every, 16))
        self.class_names = self.table.names
        self.notes = (f"classes from {table_file.name if table_file.is_file() else 'the masks'}: "
                      + ", ".join(f"{n}={v}" for n, v in zip(self.table.names, self.table.values)),
                      "each image is a case of one slice; distances (HD95, ASD) are in pixels")
        self.num_classes = len(self.class_names)
        self.preprocessing = Preprocessing(normalization="mr", class_names=self.class_names,
                                           channels=3 if colour else 1)

    def _keep(self, pairs: list[Pair], problems: list[str]) -> dict[str, Pair]:
        """Pairs by name (a name used twice is a problem), problems recorded."""
        self._problems += problems
        out: dict[str, Pair] = {}
        for pair in pairs:
            if pair.name in out:
                self._problems.append(f"{pair.image}: the name {pair.name!r} is also {out[pair.name].image}; "
                                      "give every image its own name")
            out[pair.name] = pair
        return out

    def _check_disjoint(self) -> None:
        seen: dict[str, str] = {}
        for split, pairs in self._pairs.items():
            for name in pairs:
                if name in seen and seen[name] != split:
                    self._problems.append(f"{pairs[name].image}: {name!r} is in both the {seen[name]} and the "
                                          f"{split} split; keep each image in one split")
                seen.setdefault(name, split)

    @staticmethod
    def case_of(name: str) -> str:
        return name

    def split_problems(self) -> list[str]:
        """Layout problems: images without masks and the reverse, duplicate names, list entries without files,
        an image in two splits."""
        return list(self._problems)

    def path(self, split: str, name: str) -> Path:
        """The image file."""
        return self._pair(split, name).image

    def names(self, split: str = "train") -> list[str]:
        """The names of the images with masks of a split (one image is one case)."""
        return sorted(self._pairs[self._split(split)])

    cases = names

    def read(self, split: str, name: str) -> tuple[np.ndarray, np.ndarray, dict[str, object]]:
        """Image (H, W) or (3, H, W) float32 in [0, 1], mask (H, W) uint8 class indices (masks merged)."""
        pair = self._pair(split, name)
        image = read_image(pair.image, self.preprocessing.channels)
        label = None
        for path in pair.masks:
            one = self.table.decode(_mask_values(path), path.suffix.lower() in LOSSY, str(path))
            if one.shape != image.shape[-2:]:
                raise DataError(f"{path}: mask of {one.shape[1]}x{one.shape[0]} pixels but its image {pair.image.name} "
                                f"has {image.shape[-1]}x{image.shape[-2]}; masks must match their images")
            label = one if label is None else np.maximum(label, one)
        return image, label, {}

    def slices(self, split: str = "train", *, cases: Sequence[str] | None = None,
               exclude_cases: Sequence[str] | None = None, size: int = 224) -> SliceDataset:
        self._raise_problems()
        names = select_cases(self.names(split), self.case_of, cases, exclude_cases, str(self.root))
        return FileSlices(self, self._split(split), names, size)

    def volumes(self, split: str = "test", *, cases: Sequence[str] | None = None,
                exclude_cases: Sequence[str] | None = None) -> Iterator[Volume]:
        """Each image as a volume of one slice: image (1, H, W) or (1, 3, H, W), label (1, H, W), no spacing."""
        self._raise_problems()
        for name in select_cases(self.names(split), self.case_of, cases, exclude_cases, str(self.root)):
            image, label, _ = self.read(split, name)
            yield Volume(case=name, image=image[None], label=label[None].astype(np.int64), spacing=None)

    def _raise_problems(self) -> None:
        if self._problems:
            more = f" (and {len(self._problems) - 1} more problem(s): run msvmunet check-data)" if len(
                self._problems) > 1 else ""
            raise DataError(self._problems[0] + more)

    def _pair(self, split: str, name: str) -> Pair:
        pairs = self._pairs[self._split(split)]
        if name not in pairs:
            raise DataError(f"{self.root}: no image {name!r} in the {split} split")
        return pairs[name]

    def _split(self, split: str) -> str:
        split = {"valid": "val", "validation": "val"}.get(split, split)
        if split not in self.splits:
            raise DataError(f"{self.root}: this image-folder dataset has the splits {self.splits}, not {split!r}")
        return split


def _stem(entry: str) -> str:
    name = Path(entry).name
    return Path(name).stem if Path(name).suffix.lower() in IMAGE_SUFFIXES else name

