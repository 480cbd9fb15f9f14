"""Pixel metrics of the pooled confusion matrix, against counts made with boolean masks."""

import math

import numpy as np
import pytest

from msvmunet.metrics import PooledConfusion, confusion_matrix, format_pooled, scores, write_pooled_report


def counts(pred, gt, c):
    p, g = pred == c, gt == c
    return (p & g).sum(), (p & ~g).sum(), (~p & g).sum(), (~p & ~g).sum()


def test_binary_scores_are_the_papers_formulas():
    rng = np.random.default_rng(0)
    images = [(rng.integers(0, 2, (13, 17)), rng.integers(0, 2, (13, 17))) for _ in range(3)]
    images.append((rng.integers(0, 2, (9, 5)), np.zeros((9, 5), int)))  # another size, empty ground truth
    pooled = PooledConfusion(["lesion"])
    for i, (pred, gt) in enumerate(images):
        pooled.add(f"img{i}", pred, gt)
    pred = np.concatenate([p.ravel() for p, _ in images])
    gt = np.concatenate([g.ravel() for _, g in images])
    tp, fp, fn, tn = counts(pred, gt, 1)
    total = pooled.total()
    assert total["miou"] == pytest.approx(tp / (tp + fp + fn))
    assert total["dsc"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert total["accuracy"] == pytest.approx((tp + tn) / pred.size)
    assert total["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert total["specificity"] == pytest.approx(tn / (tn + fp))
    last = pooled.per_image()["img3"]
    assert math.isnan(last["sensitivity"]) and last["specificity"] == pytest.approx((images[3][0] == 0).mean())


def test_multi_class_is_one_vs_rest_averaged_over_foreground():
    rng = np.random.default_rng(1)
    pred, gt = rng.integers(0, 4, (31, 29)), rng.integers(0, 4, (31, 29))
    matrix = confusion_matrix(pred, gt, 4)
    assert matrix.sum() == pred.size and matrix[2, 3] == ((gt == 2) & (pred == 3)).sum()
    result = scores(matrix)
    ious = []
    for c in (1, 2, 3):
        tp, fp, fn, tn = counts(pred, gt, c)
        ious.append(tp / (tp + fp + fn))
        assert result["classes"][c - 1]["specificity"] == pytest.approx(tn / (tn + fp))
    assert result["miou"] == pytest.approx(np.mean(ious))
    assert result["accuracy"] == pytest.approx((pred == gt).mean())


def test_report_files(tmp_path):
    pooled = PooledConfusion(["a", "b"])
    pooled.add("x", np.array([[0, 1], [2, 2]]), np.array([[0, 1], [2, 1]]))
    paths = write_pooled_report(tmp_path, pooled)
    assert paths["images"].read_text().splitlines()[0] == "image,class,miou,dsc,accuracy,sensitivity,specificity"
    assert len(paths["images"].read_text().splitlines()) == 1 + 3
    assert "| 75.00 |" in format_pooled(pooled)  # accuracy 3 of 4 pixels
