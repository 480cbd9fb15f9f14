"""2-D image-folder datasets read from real PNG/JPEG/BMP files: layouts, masks, splits, bad input."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from msvmunet.cli import main
from msvmunet.data import check_dataset, detect_format, open_dataset, split_cases
from msvmunet.errors import DataError

from .layouts import COLOURS, write_busi, write_colour_masks, write_index_masks, write_isic, write_kvasir


def test_isic_suffix_names_rgb_images_and_split_folders(tmp_path):
    names = write_isic(tmp_path)
    assert detect_format(tmp_path) == "images"
    data = open_dataset(tmp_path)
    assert data.splits == ("train", "val", "test") and data.class_names == ("background", "foreground")
    assert data.preprocessing.channels == 3 and data.preprocessing.model_channels == 3
    assert {s: data.names(s) for s in data.splits} == names
    name = names["val"][1]
    image, label, _ = data.read("val", name)
    rgb = np.asarray(Image.open(tmp_path / "val" / "images" / f"{name}.jpg"), np.float32) / 255
    mask = np.asarray(Image.open(tmp_path / "val" / "masks" / f"{name}_segmentation.png"))
    np.testing.assert_allclose(image, rgb.transpose(2, 0, 1))
    np.testing.assert_array_equal(label, mask // 255)
    item = data.slices("train", size=16)[2]
    assert item["image"].shape == (3, 16, 16) and item["label"].shape == (16, 16)
    volume = next(iter(data.volumes("test")))
    assert volume.image.shape[:2] == (1, 3) and volume.label.shape == (1, *volume.image.shape[-2:])
    assert volume.spacing is None and volume.case == names["test"][0]
    assert check_dataset(tmp_path).ok


def test_isic_challenge_downloads_as_they_unpack(tmp_path):
    names = write_isic(tmp_path / "vmunet")
    for split, word in (("train", "Training"), ("val", "Validation"), ("test", "Test")):
        (tmp_path / "vmunet" / split / "images").rename(tmp_path / f"ISIC2018_Task1-2_{word}_Input")
        (tmp_path / "vmunet" / split / "masks").rename(tmp_path / f"ISIC2018_Task1_{word}_GroundTruth")
    shutil.rmtree(tmp_path / "vmunet")
    Image.new("RGB", (8, 8)).save(tmp_path / "ISIC2018_Task1-2_Training_Input" / "ISIC_0000000_superpixels.png")
    (tmp_path / "ISIC2018_Task1-2_Training_Input" / "LICENSE.txt").write_text("CC-BY-NC")
    assert detect_format(tmp_path) == "images"
    data = open_dataset(tmp_path)
    assert {s: data.names(s) for s in data.splits} == names and data.split_problems() == []


def test_kvasir_jpeg_masks_are_thresholded_at_128(tmp_path):
    originals = write_kvasir(tmp_path)
    data = open_dataset(tmp_path)
    assert data.splits == ("train",) and data.num_classes == 2
    raw = np.asarray(Image.open(tmp_path / "masks" / "cju0003.jpg").convert("L"))
    assert len(np.unique(raw)) > 2, "the JPEG mask should be noisy"
    _, label, _ = data.read("train", "cju0003")
    np.testing.assert_array_equal(label, (raw >= 128).astype(np.uint8))
    assert (label == originals[3] // 255).mean() > 0.97
    train, val = split_cases(data.cases("train"), 0.25, seed=1)
    assert len(val) == 2 and not set(train) & set(val) and len(data.slices("train", cases=train)) == 6


def test_busi_masks_beside_images_and_several_masks_merged(tmp_path):
    write_busi(tmp_path)
    data = open_dataset(tmp_path)
    assert data.preprocessing.channels == 1 and len(data.names("train")) == 9
    _, label, _ = data.read("train", "benign (1)")
    first = np.asarray(Image.open(tmp_path / "benign" / "benign (1)_mask.png")) // 255
    second = np.asarray(Image.open(tmp_path / "benign" / "benign (1)_mask_1.png")) // 255
    np.testing.assert_array_equal(label, np.maximum(first, second))
    assert (label != first).any() and data.read("train", "normal (2)")[1].max() == 0
    image = data.read("train", "malignant (3)")[0]
    assert image.shape == (32, 33) and image.dtype == np.float32
    assert data.slices("train", size=16)[0]["image"].shape == (1, 16, 16)


@pytest.mark.parametrize("palette", [False, True], ids=["rgb", "palette"])
def test_colour_masks_with_a_table_and_list_splits(tmp_path, palette):
    write_colour_masks(tmp_path, table=True, palette=palette)
    data = open_dataset(tmp_path)
    assert data.class_names == tuple(COLOURS) and data.splits == ("train", "test")
    assert data.names("test") == ["scan4", "scan5"] and data.preprocessing.channels == 1
    _, label, _ = data.read("test", "scan5")
    rgb = np.asarray(Image.open(tmp_path / "label" / "scan5.png").convert("RGB"))
    expected = np.zeros(label.shape, np.uint8)
    for index, colour in enumerate(COLOURS.values()):
        expected[(rgb == colour).all(-1)] = index
    np.testing.assert_array_equal(label, expected)
    assert set(np.unique(label)) == {0, 1, 2}


def test_colour_table_found_in_the_data(tmp_path):
    write_colour_masks(tmp_path, table=False, palette=True)
    data = open_dataset(tmp_path)
    assert data.class_names == ("background", "#0000ff", "#ff0000")  # black first, then by colour
    rgb = np.asarray(Image.open(tmp_path / "label" / "scan0.png").convert("RGB"))
    _, label, _ = data.read("train", "scan0")
    np.testing.assert_array_equal(label == 1, (rgb == (0, 0, 255)).all(-1))
    np.testing.assert_array_equal(label == 2, (rgb == (255, 0, 0)).all(-1))


def test_index_masks_and_bmp_images(tmp_path):
    write_index_masks(tmp_path)
    data = open_dataset(tmp_path)
    assert data.num_classes == 3 and data.class_names == ("background", "class1", "class2")
    _, label, _ = data.read("train", "s2")
    np.testing.assert_array_equal(label, np.asarray(Image.open(tmp_path / "labels" / "s2.png")))


def _one_line_problems(root):
    report = check_dataset(root)
    assert not report.ok and all("\n" not in p for p in report.problems)
    return report.problems


def test_images_without_masks_and_masks_without_images_are_named(tmp_path):
    write_kvasir(tmp_path, count=4)
    (tmp_path / "images" / "cju0001.jpg").rename(tmp_path / "images" / "lonely.jpg")
    problems = _one_line_problems(tmp_path)
    assert len(problems) == 2
    assert "image(s) without a mask" in problems[0] and "lonely.jpg" in problems[0]
    assert "mask(s) without an image" in problems[1] and "cju0001.jpg" in problems[1]
    with pytest.raises(DataError, match="lonely.jpg"):
        open_dataset(tmp_path).slices("train")


def test_bad_files_each_give_one_line_naming_the_file(tmp_path, capsys):
    write_colour_masks(tmp_path, table=True)
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "label" / "scan1.png")   # other size
    (tmp_path / "image" / "scan2.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")                  # unreadable
    mask = np.asarray(Image.open(tmp_path / "label" / "scan3.png")).copy()
    mask[3, 4] = (0, 255, 0)                                                                     # unknown colour
    Image.fromarray(mask).save(tmp_path / "label" / "scan3.png")
    (tmp_path / "test.txt").write_text("scan4\nscan9\n")                                         # missing file
    problems = _one_line_problems(tmp_path)
    assert len(problems) == 4
    text = "\n".join(problems)
    assert "test.txt" in problems[0] and "scan9" in problems[0]
    assert "scan1.png" in text and "10x10" in text
    assert "scan2.png: unreadable image" in text
    assert "scan3.png: mask value (0, 255, 0) at pixel (y=3, x=4)" in text
    with pytest.raises(DataError, match="scan3.png"):
        open_dataset(tmp_path).read("train", "scan3")
    assert main(["check-data", str(tmp_path), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "4 problem(s)" in out and "classes from classes.json" in out


def test_an_image_in_two_splits_is_refused(tmp_path):
    write_colour_masks(tmp_path, table=True)
    (tmp_path / "test.txt").write_text("scan0\nscan5\n")
    problems = _one_line_problems(tmp_path)
    assert any("'scan0' is in both the train and the test split" in p for p in problems)


def test_a_bad_class_table_is_named(tmp_path):
    write_colour_masks(tmp_path, table=False)
    (tmp_path / "classes.json").write_text(json.dumps({"background": [0, 0]}))
    with pytest.raises(DataError, match="classes.json"):
        open_dataset(tmp_path)


def test_class_tables_past_256_classes_keep_their_indices():
    from msvmunet.data.image_folders import ClassTable

    table = ClassTable(tuple(f"c{i}" for i in range(300)), tuple(range(0, 1200, 4)))
    raw = np.array([[0, 1196], [1028, 12]])
    expected = raw // 4
    np.testing.assert_array_equal(table.decode(raw, False, "m.png"), expected)
    np.testing.assert_array_equal(table.decode(raw + 1, True, "m.jpg"), expected)  # lossy: the nearest value
    with pytest.raises(DataError, match="m.png: mask value 1 at pixel"):
        table.decode(raw + 1, False, "m.png")
