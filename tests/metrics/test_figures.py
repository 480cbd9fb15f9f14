"""Overlay pictures (panels, enlargement, titles, legend), coloured label previews, and one colour per class
across the overlays and the Dice box plot."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from msvmunet.engine.evaluate import label_set
from msvmunet.errors import DataError
from msvmunet.metrics import (
    ACDC,
    SYNAPSE,
    Aggregator,
    colorize_labels,
    colors_for,
    overlay_image,
    overlay_panels,
    pick_slices,
    save_case_overlays,
    save_dice_boxplot,
)
from msvmunet.metrics.figures import MIN_PANEL


def small_slice(h: int = 20, w: int = 30):
    image = np.linspace(0, 1, h * w).reshape(h, w)
    gt = np.zeros((h, w), dtype=np.int64)
    pred = np.zeros_like(gt)
    gt[5:15, 5:15] = 1
    pred[6:16, 6:16] = 1
    pred[2:4, 20:28] = 3
    return image, gt, pred


def colour_count(picture: np.ndarray, color) -> int:
    return int(np.all(picture == np.asarray(color, dtype=np.uint8), axis=-1).sum())


def test_panels_and_colours():
    image, gt, pred = small_slice()
    w = image.shape[1]
    panels = overlay_panels(image, gt, pred, ACDC.colors, alpha=0.5)
    assert [title for title, _ in panels] == ["Image", "Ground truth", "Prediction"]
    grey, truth, predicted = (p for _, p in panels)
    assert grey.shape == (20, w, 3) and grey.dtype == np.uint8
    assert np.all(grey[..., 0] == grey[..., 1]) and grey[0, 0, 0] == 0 and grey[-1, -1, 0] == 255
    # outside every label the three panels show the same grey
    assert np.array_equal(truth[0], grey[0]) and np.array_equal(predicted[0], grey[0])

    def blend(y, x, color):  # half grey, half class colour (to within rounding of the grey)
        return 0.5 * grey[y, x] + 0.5 * np.array(color)

    assert np.abs(truth[10, 10] - blend(10, 10, ACDC.colors[0])).max() <= 1
    assert np.abs(predicted[10, 10] - blend(10, 10, ACDC.colors[0])).max() <= 1
    assert np.abs(predicted[3, 22] - blend(3, 22, ACDC.colors[2])).max() <= 1
    # ground-truth outline at full colour on the prediction panel, not inside the organ
    assert tuple(predicted[5, 10]) == ACDC.colors[0] and tuple(predicted[10, 10]) != ACDC.colors[0]
    without = overlay_panels(image, None, pred, ACDC.colors)
    assert [title for title, _ in without] == ["Image", "Prediction"]
    assert np.array_equal(without[1][1][10, 10], predicted[10, 10])  # the same fill
    assert np.array_equal(without[1][1][5, 10], grey[5, 10])  # and no outline


def test_small_slices_are_enlarged_nearest_with_titles_and_a_legend():
    image, gt, pred = small_slice(20, 30)
    picture = overlay_image(image, gt, pred, ACDC.colors, names=ACDC.names)
    array = np.asarray(picture)
    panels = overlay_panels(image, gt, pred, ACDC.colors)
    boxes = picture.info["panels"]
    assert picture.mode == "RGB" and len(boxes) == 3
    scale = -(-MIN_PANEL // 20)  # 13: the shorter side 20 -> 260 pixels
    for (left, top, right, bottom), (_, panel) in zip(boxes, panels):
        assert (bottom - top, right - left) == (20 * scale, 30 * scale)
        assert min(bottom - top, right - left) >= MIN_PANEL
        # nearest-neighbour enlargement: every source pixel becomes a scale x scale block of its colour
        assert np.array_equal(array[top:bottom, left:right], np.kron(panel, np.ones((scale, scale, 1), np.uint8)))
        title_strip = array[:top, left:right]
        assert (title_strip.max(axis=-1) > 150).sum() > 20  # light text drawn above the panel
    assert sorted(b[0] for b in boxes) == [b[0] for b in boxes] and boxes[0][2] < boxes[1][0] < boxes[1][2] < boxes[2][0]
    legend = array[max(b[3] for b in boxes):]
    for color in ACDC.colors:
        assert colour_count(legend, color) >= 100, color  # a filled swatch of every class's colour
    assert (legend.max(axis=-1) > 150).sum() > 3 * 20  # and names written beside them


def test_large_slices_keep_their_size_and_long_legends_wrap():
    rng = np.random.default_rng(1)
    image = rng.random((260, 300))
    labels = rng.integers(0, 9, (260, 300))
    picture = overlay_image(image, None, labels, SYNAPSE.colors, names=SYNAPSE.names)
    boxes = picture.info["panels"]
    assert [(b[2] - b[0], b[3] - b[1]) for b in boxes] == [(300, 260)] * 2
    legend = np.asarray(picture)[boxes[0][3]:]
    for color in SYNAPSE.colors:
        assert colour_count(legend, color) >= 100, color
    assert picture.size[0] == 2 * 300 + 3 * 8  # the eight names wrap instead of widening the picture


def test_overlay_errors():
    with pytest.raises(DataError, match="colour"):
        overlay_image(np.zeros((4, 4)), np.full((4, 4), 4), np.zeros((4, 4), int), ACDC.colors)
    with pytest.raises(DataError, match="one shape"):
        overlay_image(np.zeros((4, 4)), np.zeros((4, 5), int), np.zeros((4, 4), int), ACDC.colors)
    with pytest.raises(DataError, match="one name per colour"):
        overlay_image(np.zeros((4, 4)), None, np.zeros((4, 4), int), ACDC.colors, names=["RV"])


def test_case_overlays(tmp_path):
    image = np.random.default_rng(0).random((9, 16, 24))
    gt = np.zeros((9, 16, 24), dtype=np.int64)
    gt[2:7, 4:10, 4:10] = 5
    assert pick_slices(gt) == [2, 4, 6] and pick_slices(gt, n=10) == [2, 3, 4, 5, 6]
    assert pick_slices(np.zeros_like(gt)) == [4]
    paths = save_case_overlays(tmp_path, "case 0001/a", image, gt, gt, SYNAPSE.colors, names=SYNAPSE.names)
    assert [p.name for p in paths] == ["case_0001_a_z002.png", "case_0001_a_z004.png", "case_0001_a_z006.png"]
    for p in paths:
        with Image.open(p) as picture:
            assert picture.mode == "RGB" and picture.size[0] >= 3 * MIN_PANEL and picture.size[1] > MIN_PANEL
            assert colour_count(np.asarray(picture), SYNAPSE.colors[4]) >= 100  # the liver's legend swatch
    assert [p.name for p in save_case_overlays(tmp_path, "x", image, gt, gt, SYNAPSE.colors, slices=[-1])] == [
        "x_z008.png"]
    with pytest.raises(DataError, match="slice 9"):
        save_case_overlays(tmp_path, "x", image, gt, gt, SYNAPSE.colors, slices=[9])


def test_colorize_labels():
    labels = np.array([[0, 1, 2], [3, 3, 0]], dtype=np.uint8)
    rgb = colorize_labels(labels, ACDC.colors)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    expected = np.array([[(0, 0, 0), ACDC.colors[0], ACDC.colors[1]], [ACDC.colors[2], ACDC.colors[2], (0, 0, 0)]])
    assert np.array_equal(rgb, expected)
    volume = np.random.default_rng(0).integers(0, 9, (3, 5, 7))
    coloured = colorize_labels(volume, SYNAPSE.colors)
    assert coloured.shape == (3, 5, 7, 3)
    for c, color in enumerate(((0, 0, 0),) + SYNAPSE.colors):
        assert np.all(coloured[volume == c] == color)
    with pytest.raises(DataError, match="colour"):
        colorize_labels(np.array([[0, 4]]), ACDC.colors)
    with pytest.raises(DataError, match="integer"):
        colorize_labels(np.zeros((2, 2)), ACDC.colors)


@pytest.mark.parametrize("classes", [
    ("background", "aorta", "gallbladder", "left_kidney", "right_kidney", "liver", "pancreas", "spleen", "stomach"),
    ("background", "RV", "Myo", "LV"),
    ("background", "tumour", "oedema"),
], ids=["synapse", "acdc", "other"])
def test_one_colour_per_class_in_overlays_and_box_plot(tmp_path, classes):
    pytest.importorskip("matplotlib")
    labels = label_set(classes)  # what evaluate and predict colour the overlays with
    assert colors_for(labels.names) == labels.colors
    agg = Aggregator(labels.names, "paper")
    volume = np.zeros((2, 20, 20), dtype=np.int64)
    half = volume.copy()
    for c in range(1, len(classes)):
        volume[0, 2 * c, : 2 * c] = c
        half[0, 2 * c, :c] = c
    agg.add_case("a", volume, volume)  # Dice 1 and 2/3 for every class: boxes of some height
    agg.add_case("b", half, volume)
    with Image.open(save_dice_boxplot(tmp_path / "box.png", agg)) as plot:
        plot_pixels = np.asarray(plot.convert("RGB"))
    legend = np.asarray(overlay_image(volume[0] / 9.0, volume[0], volume[0], labels.colors, names=labels.names))
    for color in labels.colors:
        assert colour_count(plot_pixels, color) >= 20, color  # a box filled in the class colour
        assert colour_count(legend, color) >= 100, color
