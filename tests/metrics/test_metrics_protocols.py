"""The paper and strict protocols: per-case branches, aggregation, counts, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from msvmunet.errors import ConfigError, DataError
from msvmunet.metrics import METRICS, Aggregator, binary_metrics, class_metrics, evaluate_case

NAN = float("nan")
MEDPY_MISSING = "medpy is not installed (pip install 'msvm-unet[ci]')"


def hand_made_case() -> tuple[np.ndarray, np.ndarray]:
    """(7, 8) labels, 5 classes. Class 1 in both, 2 only predicted, 3 only in the ground truth, 4 nowhere.

    Class 1: gt is the 3x3 block at rows 0-2, cols 0-2; pred is that block plus the voxel (0, 5). So
    |P & G| = 9, |P| = 10, |G| = 9: dice 18/19, jaccard 9/10. Surfaces: the block's 8 edge voxels, plus
    (0, 5) for pred. pred -> gt: eight 0s and 3 (from (0, 5) to (0, 2)); gt -> pred: eight 0s. Pooled 17
    values, sixteen 0s and one 3: the 95th percentile is at rank 0.95 * 16 = 15.2, 0.2 * 3 = 0.6.
    asd = (3 / 9 + 0) / 2 = 1/6.
    """
    gt = np.zeros((7, 8), dtype=np.int64)
    pred = np.zeros_like(gt)
    gt[0:3, 0:3] = 1
    pred[0:3, 0:3] = 1
    pred[0, 5] = 1
    pred[6, 0] = 2
    gt[5:7, 5:7] = 3
    return pred, gt


def values(results) -> list[list[float]]:
    return [[r.metric(m) for m in METRICS] for r in results]


def test_paper_protocol_every_branch_exactly():
    pred, gt = hand_made_case()
    results = evaluate_case(pred, gt, num_classes=5, protocol="paper")
    assert [r.class_id for r in results] == [1, 2, 3, 4]
    np.testing.assert_allclose(values(results)[0], [18 / 19, 0.6, 9 / 10, 1 / 6], rtol=1e-12)
    assert values(results)[1] == [1.0, 0.0, 1.0, 0.0]  # predicted, absent from the ground truth
    assert values(results)[2] == [0.0, 0.0, 0.0, 0.0]  # missed
    assert values(results)[3] == [0.0, 0.0, 0.0, 0.0]  # absent from both
    assert [(r.pred_voxels, r.gt_voxels) for r in results] == [(10, 9), (1, 0), (0, 4), (0, 0)]


def test_strict_protocol_every_branch_exactly():
    pred, gt = hand_made_case()
    # columns are 2 mm apart: (0, 5) is 6 mm from (0, 2), everything else scales alike
    results = evaluate_case(pred, gt, num_classes=5, protocol="strict", spacing=(1.0, 2.0))
    np.testing.assert_allclose(values(results)[0], [18 / 19, 1.2, 9 / 10, 1 / 3], rtol=1e-12)
    np.testing.assert_equal(values(results)[1], [0.0, NAN, 0.0, NAN])  # false positive: Dice 0, not 1
    np.testing.assert_equal(values(results)[2], [0.0, NAN, 0.0, NAN])  # missed: distances undefined, not 0
    np.testing.assert_equal(values(results)[3], [NAN, NAN, NAN, NAN])  # absent from both: nothing to score


def official_test_case(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> list[list[float]]:
    """The MSVM-UNet test code's per-case rule, written out with medpy."""
    mb = pytest.importorskip("medpy.metric.binary", reason=MEDPY_MISSING)
    rows = []
    for c in range(1, num_classes):
        p, g = pred == c, gt == c
        if p.sum() > 0 and g.sum() > 0:
            rows.append([mb.dc(p, g), mb.hd95(p, g), mb.jc(p, g), np.mean([mb.asd(p, g), mb.asd(g, p)])])
        elif p.sum() > 0 and g.sum() == 0:
            rows.append([1, 0, 1, 0])
        else:
            rows.append([0, 0, 0, 0])
    return rows


@pytest.mark.parametrize("dims", [2, 3])
def test_paper_protocol_matches_the_official_rule_on_random_volumes(masks, dims):
    shape = (29, 31) if dims == 2 else (9, 27, 25)
    gt = masks.labels(shape, 6, absent=(2,))
    pred = masks.labels(shape, 6, absent=(4,))
    ours = values(evaluate_case(pred, gt, 6, "paper"))
    np.testing.assert_allclose(ours, official_test_case(pred, gt, 6), rtol=1e-9, atol=1e-6)


def test_strict_protocol_equals_binary_metrics_per_class(masks):
    """The per-class crop of evaluate_case changes nothing: compare with the metrics of the full masks."""
    shape, spacing = (11, 26, 23), (2.5, 0.7, 0.9)
    gt, pred = masks.labels(shape, 5, absent=(3,)), masks.labels(shape, 5)
    for r in evaluate_case(pred, gt, 5, "strict", spacing):
        expected = binary_metrics(pred == r.class_id, gt == r.class_id, spacing)
        np.testing.assert_equal([r.metric(m) for m in METRICS], [expected[m] for m in METRICS])


def test_label_dtypes_do_not_matter(masks):
    gt, pred = masks.labels((21, 22), 4), masks.labels((21, 22), 4)
    reference = evaluate_case(pred, gt, 4)
    assert evaluate_case(pred.astype(np.uint8), gt.astype(np.float32), 4) == reference
    assert evaluate_case(pred.astype(np.int16), gt.astype(np.uint16), 4) == reference
    assert evaluate_case(pred == 1, gt == 1, 2) == evaluate_case((pred == 1).astype(int), (gt == 1) * 1.0, 2)


def test_paper_aggregation_means_over_cases_then_classes():
    pred, gt = hand_made_case()
    agg = Aggregator(["one", "two", "three", "four"], protocol="paper")
    agg.add_case("a", pred, gt)
    agg.add_case("b", gt, gt)  # perfect: class 1 -> 1, 0, 1, 0; class 3 -> 1, 0, 1, 0; classes 2, 4 -> 0s
    s = agg.summary()
    assert (s.protocol, s.units, s.n_cases, s.class_names) == ("paper", "voxels", 2, ("one", "two", "three", "four"))
    per_class = [[c.metrics[m].mean for m in METRICS] for c in s.classes]
    expected = [
        [(18 / 19 + 1) / 2, 0.6 / 2, (0.9 + 1) / 2, (1 / 6) / 2],
        [0.5, 0.0, 0.5, 0.0],
        [0.5, 0.0, 0.5, 0.0],
        [0.0, 0.0, 0.0, 0.0],
    ]
    np.testing.assert_allclose(per_class, expected, rtol=1e-12)
    np.testing.assert_allclose([s.mean[m].mean for m in METRICS], np.mean(expected, axis=0), rtol=1e-12)
    # the official code sums the per-case arrays, divides by the number of cases, then averages the classes
    official = (np.array(official_test_case(pred, gt, 5)) + np.array(official_test_case(gt, gt, 5))) / 2
    np.testing.assert_allclose([s.mean[m].mean for m in METRICS], official.mean(axis=0), rtol=1e-12)
    assert all(c.metrics[m].n_undefined == 0 for c in s.classes for m in METRICS)


def test_strict_aggregation_is_nan_aware_and_counts():
    pred, gt = hand_made_case()
    agg = Aggregator(["one", "two", "three", "four"], protocol="strict")
    agg.add_case("a", pred, gt, spacing=(1.0, 2.0))
    agg.add_case("b", gt, gt, spacing=(1.0, 1.0))
    s = agg.summary()
    assert s.units == "mm"
    one, two, three, four = s.classes
    assert one.metrics["hd95"].mean == pytest.approx(1.2 / 2) and one.metrics["hd95"].n_used == 2
    # class 2: case a false positive (dice 0, hd95 NaN), case b absent from both (all NaN)
    assert (two.metrics["dice"].mean, two.metrics["dice"].n_used, two.metrics["dice"].n_undefined) == (0.0, 1, 1)
    assert math.isnan(two.metrics["hd95"].mean) and two.metrics["hd95"].n_undefined == 2
    # class 3: case a missed (dice 0, hd95 NaN), case b perfect
    assert (three.metrics["dice"].mean, three.metrics["dice"].n_used) == (0.5, 2)
    assert (three.metrics["hd95"].mean, three.metrics["hd95"].n_used, three.metrics["hd95"].n_undefined) == (0.0, 1, 1)
    assert all(math.isnan(four.metrics[m].mean) and four.metrics[m].n_used == 0 for m in METRICS)
    # over classes: only the defined class means, counted
    assert s.mean["dice"].mean == pytest.approx(((18 / 19 + 1) / 2 + 0.0 + 0.5) / 3)
    assert (s.mean["dice"].n_used, s.mean["dice"].n_undefined) == (3, 1)
    assert s.mean["hd95"].mean == pytest.approx((0.6 + 0.0) / 2) and s.mean["hd95"].n_used == 2


def test_aggregator_accepts_results_computed_elsewhere(masks):
    gt, pred = masks.labels((13, 14), 3), masks.labels((13, 14), 3)
    direct, indirect = Aggregator(["a", "b"]), Aggregator(["a", "b"])
    direct.add_case("x", pred, gt)
    indirect.add("x", evaluate_case(pred, gt, 3))
    assert direct.summary() == indirect.summary() and list(indirect.cases) == ["x"]


def test_protocol_errors():
    pred, gt = hand_made_case()
    with pytest.raises(ConfigError, match="unknown evaluation protocol"):
        evaluate_case(pred, gt, 5, "nnunet")
    with pytest.raises(ConfigError, match="voxels"):
        evaluate_case(pred, gt, 5, "paper", spacing=(1.0, 1.0))
    with pytest.raises(ConfigError, match="spacing"):
        evaluate_case(pred, gt, 5, "strict")
    with pytest.raises(ConfigError):
        class_metrics(pred == 1, gt == 1, "strict")
    with pytest.raises(ConfigError, match="unknown"):
        Aggregator(["a"], protocol="Paper")


def test_label_errors():
    pred, gt = hand_made_case()
    with pytest.raises(DataError, match=r"labels \[2\] outside 0 \.\. 1"):
        evaluate_case(pred, gt, 2)
    with pytest.raises(DataError, match="non-integer"):
        evaluate_case(pred + 0.5, gt, 5)
    with pytest.raises(DataError, match="non-integer"):
        evaluate_case(np.where(pred == 1, np.nan, pred), gt, 5)
    with pytest.raises(DataError, match=r"labels \[5\.5\]"):
        evaluate_case(pred + 3.5, gt, 5)
    with pytest.raises(DataError, match="shape"):
        evaluate_case(pred[:, :-1], gt, 5)


def test_aggregator_errors(masks):
    pred, gt = hand_made_case()
    agg = Aggregator(["one", "two", "three", "four"])
    with pytest.raises(DataError, match="no cases"):
        agg.summary()
    agg.add_case("a", pred, gt)
    with pytest.raises(DataError, match="twice"):
        agg.add_case("a", pred, gt)
    with pytest.raises(DataError, match="classes"):
        agg.add("b", evaluate_case(pred, gt, 5)[:3])


def test_overlap_only_evaluation_skips_distances_and_keeps_dice():
    from msvmunet.metrics import evaluate_case

    gt = np.zeros((6, 10, 10), dtype=np.int64)
    gt[1:4, 2:6, 2:6] = 1
    pred = np.zeros_like(gt)
    pred[1:4, 3:7, 2:6] = 1
    full = evaluate_case(pred, gt, 2, "paper")
    quick = evaluate_case(pred, gt, 2, "paper", distances=False)
    assert quick[0].dice == full[0].dice and quick[0].jaccard == full[0].jaccard
    assert np.isnan(quick[0].hd95) and np.isnan(quick[0].asd) and full[0].hd95 > 0
