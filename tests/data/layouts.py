"""Writers of small datasets in the layouts users have, with real files (h5py, Pillow, nibabel)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from .helpers import save_nifti


def blob_mask(rng: np.random.Generator, shape: tuple[int, int], value: int = 255) -> np.ndarray:
    """A filled rectangle of ``value`` somewhere in the image, 0 elsewhere."""
    h, w = shape
    y, x = int(rng.integers(1, h // 2)), int(rng.integers(1, w // 2))
    mask = np.zeros(shape, np.uint8)
    mask[y:y + h // 3, x:x + w // 3] = value
    return mask


def write_ssl4mis(root: Path, slices_in_data: bool = False, shape=(4, 20, 24)) -> dict[str, list[str]]:
    """ACDC as SSL4MIS ships it: 10 patients split 7 / 1 / 2, frames 01 and 07 each; returns the lists."""
    rng = np.random.default_rng(0)
    data = root / "data"
    slices = data if slices_in_data else data / "slices"
    slices.mkdir(parents=True, exist_ok=True)
    lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    train_slices = []
    for patient in range(1, 11):
        split = "train" if patient <= 7 else "val" if patient == 8 else "test"
        for frame in (1, 7):
            volume = f"patient{patient:03d}_frame{frame:02d}"
            image = rng.random(shape).astype(np.float32)
            label = rng.integers(0, 4, shape).astype(np.uint8)
            with h5py.File(data / f"{volume}.h5", "w") as f:
                f["image"], f["label"] = image, label
            lists[split].append(volume)
            if split == "train":
                for k in range(shape[0]):
                    with h5py.File(slices / f"{volume}_slice_{k}.h5", "w") as f:
                        f["image"], f["label"] = image[k], label[k]
                    train_slices.append(f"{volume}_slice_{k}")
    for split, names in lists.items():
        (root / f"{split}.list").write_text("\n".join(names) + "\n")
    (root / "train_slices.list").write_text("\n".join(train_slices) + "\n")
    return lists


def _rgb(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return (rng.random((*shape, 3)) * 255).astype(np.uint8)


def write_isic(root: Path) -> dict[str, list[str]]:
    """VM-UNet's ISIC layout: {train,val,test}/images/ISIC_*.jpg (RGB) + masks/ISIC_*_segmentation.png (0/255)."""
    rng = np.random.default_rng(1)
    names: dict[str, list[str]] = {}
    number = 0
    for split, count in (("train", 6), ("val", 2), ("test", 3)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        names[split] = []
        for _ in range(count):
            name = f"ISIC_{number:07d}"
            shape = (int(rng.integers(28, 40)), int(rng.integers(30, 44)))
            Image.fromarray(_rgb(rng, shape)).save(root / split / "images" / f"{name}.jpg")
            Image.fromarray(blob_mask(rng, shape)).save(root / split / "masks" / f"{name}_segmentation.png")
            names[split].append(name)
            number += 1
    return names


def write_kvasir(root: Path, count: int = 8) -> list[np.ndarray]:
    """Kvasir-SEG: images/*.jpg (RGB) and masks/*.jpg, the masks 0/255 saved as (noisy) RGB JPEG."""
    rng = np.random.default_rng(2)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    masks = []
    for i in range(count):
        shape = (30 + i, 36)
        mask = blob_mask(rng, shape)
        Image.fromarray(_rgb(rng, shape)).save(root / "images" / f"cju{i:04d}.jpg")
        Image.fromarray(np.repeat(mask[..., None], 3, axis=-1)).save(root / "masks" / f"cju{i:04d}.jpg", quality=60)
        masks.append(mask)
    return masks


def write_busi(root: Path) -> None:
    """BUSI: benign/ malignant/ normal/ with grey 'benign (1).png' beside 'benign (1)_mask.png' (and _mask_1)."""
    rng = np.random.default_rng(3)
    for group, count in (("benign", 4), ("malignant", 3), ("normal", 2)):
        (root / group).mkdir(parents=True)
        for i in range(1, count + 1):
            name = f"{group} ({i})"
            shape = (32, 30 + i)
            Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(root / group / f"{name}.png")
            mask = blob_mask(rng, shape) if group != "normal" else np.zeros(shape, np.uint8)
            Image.fromarray(mask).save(root / group / f"{name}_mask.png")
            if group == "benign" and i == 1:  # a second lesion in its own mask
                Image.fromarray(blob_mask(rng, shape)).save(root / group / f"{name}_mask_1.png")


COLOURS = {"background": [0, 0, 0], "tumour": [255, 0, 0], "vessel": [0, 0, 255]}


def write_colour_masks(root: Path, table: bool = True, palette: bool = False) -> None:
    """image/*.png (grey) + label/*.png colour masks (RGB, or palette PNGs) of three classes;
    classes.json names the colours when ``table``; split from train.txt / test.txt."""
    rng = np.random.default_rng(4)
    (root / "image").mkdir(parents=True)
    (root / "label").mkdir(parents=True)
    colours = np.array(list(COLOURS.values()), np.uint8)
    names = []
    for i in range(6):
        shape = (26, 34)
        index = np.maximum(blob_mask(rng, shape, 1), blob_mask(rng, shape, 2))
        Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(root / "image" / f"scan{i}.png")
        if palette:
            img = Image.fromarray(index, mode="P")
            img.putpalette(colours.ravel().tolist())
            img.save(root / "label" / f"scan{i}.png")
        else:
            Image.fromarray(colours[index]).save(root / "label" / f"scan{i}.png")
        names.append(f"scan{i}")
    (root / "train.txt").write_text("\n".join(names[:4]) + "\n")
    (root / "test.txt").write_text("\n".join(f"image/{n}.png" for n in names[4:]) + "\n")
    if table:
        (root / "classes.json").write_text(json.dumps(COLOURS))


def write_index_masks(root: Path) -> None:
    """imgs/*.bmp (grey) + labels/*.png holding class indices 0..2; train/ and test/ by list-less fraction."""
    rng = np.random.default_rng(5)
    (root / "imgs").mkdir(parents=True)
    (root / "labels").mkdir(parents=True)
    for i in range(5):
        shape = (24, 28)
        index = np.maximum(blob_mask(rng, shape, 1), blob_mask(rng, shape, 2))
        Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(root / "imgs" / f"s{i}.bmp")
        Image.fromarray(index).save(root / "labels" / f"s{i}.png")


def write_nifti_channels(root: Path, channels=("T1", "T2"), shape=(20, 18, 4)) -> None:
    """An nnU-Net raw dataset with one file per channel (case_0000, case_0001, ...), labelled train and test."""
    rng = np.random.default_rng(6)
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {str(i): c for i, c in enumerate(channels)},
        "labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz"}))
    for split, cases in (("Tr", ("brain001", "brain002", "brain003")), ("Ts", ("brain004",))):
        for case in cases:
            label = np.zeros(shape, np.uint8)
            label[5:12, 4:10, 1:3] = 1
            for c in range(len(channels)):
                image = (rng.random(shape) * 100 + 300.0 * label * (c + 1)).astype(np.float32)
                save_nifti(root / f"images{split}" / f"{case}_{c:04d}.nii.gz", image, zooms=(1.0, 1.0, 3.0))
            save_nifti(root / f"labels{split}" / f"{case}.nii.gz", label, zooms=(1.0, 1.0, 3.0))
