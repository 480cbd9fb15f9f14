"""Report files: CSV, Markdown and JSON summaries, the Dice box plot; atomic writing (overlays: test_figures)."""

from __future__ import annotations

import csv
import json
import math
import sys

import numpy as np
import pytest
from PIL import Image

from msvmunet.metrics import (
    ACDC,
    METRICS,
    SYNAPSE,
    Aggregator,
    default_colors,
    format_summary,
    save_dice_boxplot,
    write_report,
    write_summary_json,
)
from msvmunet._files import atomic_write


def acdc_aggregator(protocol: str) -> Aggregator:
    """Three cases of (4, 12, 12) labels; case c2 misses the LV and predicts no RV either."""
    gt = np.zeros((4, 12, 12), dtype=np.int64)
    gt[1:3, 2:6, 2:6] = 1
    gt[1:3, 6:10, 6:10] = 2
    gt[1:3, 2:5, 7:10] = 3
    shifted = np.roll(gt, 1, axis=2)
    missed = np.where(np.isin(gt, (1, 3)), 0, gt)
    agg = Aggregator(ACDC.names, protocol)
    spacing = {"spacing": (5.0, 1.5, 1.5)} if protocol == "strict" else {}
    for case, pred in [("c0", gt), ("c1", shifted), ("c2", missed)]:
        agg.add_case(case, pred, gt, **spacing)
    return agg


@pytest.mark.parametrize("protocol", ["paper", "strict"])
def test_write_report_files_parse(tmp_path, protocol):
    agg = acdc_aggregator(protocol)
    paths = write_report(tmp_path / "out", agg, selection="checkpoint chosen on the test set")
    assert set(paths) == {"cases", "markdown", "json", "boxplot"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "cases.csv", "dice_boxplot.png", "summary.json", "summary.md"]

    with open(paths["cases"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["case", "class_id", "class_name", *METRICS, "pred_voxels", "gt_voxels"]
    assert [(r["case"], r["class_name"]) for r in rows] == [(c, n) for c in ("c0", "c1", "c2") for n in ACDC.names]
    for row, (case, results) in zip(rows[::3], agg.cases.items()):
        np.testing.assert_equal([float(row[m]) for m in METRICS], [results[0].metric(m) for m in METRICS])
    c2_lv = rows[-1]
    assert (c2_lv["pred_voxels"], c2_lv["gt_voxels"]) == ("0", "18")
    assert (c2_lv["hd95"] == "nan") == (protocol == "strict")

    doc = json.loads(paths["json"].read_text())
    summary = agg.summary()
    assert doc["protocol"] == protocol and doc["n_cases"] == 3 and doc["selection"].startswith("checkpoint")
    assert doc["units"]["hd95"] == ("mm" if protocol == "strict" else "voxels")
    assert [c["name"] for c in doc["classes"]] == list(ACDC.names)
    for c, cs in zip(doc["classes"], summary.classes):
        for m in METRICS:
            expected = cs.metrics[m]
            assert c[m]["n_used"] == expected.n_used and c[m]["n_undefined"] == expected.n_undefined
            assert c[m]["mean"] == (None if math.isnan(expected.mean) else pytest.approx(expected.mean))
    assert doc["mean_over_classes"]["dice"]["mean"] == pytest.approx(summary.mean["dice"].mean)

    markdown = paths["markdown"].read_text()
    assert markdown == format_summary(summary, "checkpoint chosen on the test set")
    unit = "mm" if protocol == "strict" else "voxels"
    assert f"| DSC (%) | HD95 ({unit}) | RV | Myo | LV |" in markdown
    table = [line for line in markdown.splitlines() if line.startswith("| ") and "Class" not in line]
    assert len(table) == 2 + 3 + 1  # paper table header + row, 3 classes, mean over classes (headers skipped)

    with Image.open(paths["boxplot"]) as image:
        assert image.size == (600, 450)


def test_paper_table_numbers():
    agg = acdc_aggregator("paper")
    s = agg.summary()
    # RV: perfect, shifted by one column (4x4 blocks overlapping 3 columns: dice 0.75), missed -> 0
    rv = s.classes[0].metrics["dice"].mean
    assert rv == pytest.approx((1 + 0.75 + 0) / 3)
    lines = format_summary(s).splitlines()
    row = lines[next(i for i, line in enumerate(lines) if line.startswith("| DSC")) + 2]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == f"{100 * s.mean['dice'].mean:.2f}" and cells[2] == f"{100 * rv:.2f}" == "58.33"


def test_strict_markdown_shows_counts_and_na():
    agg = Aggregator(ACDC.names, "strict")
    gt = np.zeros((3, 8, 8), dtype=np.int64)
    gt[1, 2:5, 2:5] = 1
    agg.add_case("only", gt, gt, spacing=1.0)  # Myo and LV absent from both: all NaN
    text = format_summary(agg.summary())
    assert "| Myo | n/a | n/a | n/a | n/a | 0/1 | 0/1 |" in text
    assert "| Mean over classes | 100.00 | 0.00 | 100.00 | 0.00 | 1/3 classes | 1/3 classes |" in text
    assert "left out of every mean" in text


def test_json_has_no_nan_tokens(tmp_path):
    agg = Aggregator(ACDC.names, "strict")
    agg.add_case("empty", np.zeros((2, 5, 5), int), np.zeros((2, 5, 5), int), spacing=(2.0, 1.0, 1.0))
    path = write_summary_json(tmp_path / "s.json", agg.summary())
    text = path.read_text()
    assert "NaN" not in text and json.loads(text)["classes"][0]["dice"] == {"mean": None, "n_used": 0,
                                                                         "n_undefined": 1}


def test_boxplot_size_grows_with_classes(tmp_path):
    agg = Aggregator(SYNAPSE.names, "paper")
    labels = np.zeros((2, 9, 9), dtype=np.int64)
    labels[0, :, :8] = np.arange(1, 9)
    agg.add_case("a", labels, labels)
    with Image.open(save_dice_boxplot(tmp_path / "b.png", agg, SYNAPSE.colors, dpi=50)) as image:
        assert image.size == (round(50 * (0.8 * 8 + 1.5)), 225)


def test_boxplot_without_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r'pip install "msvm-unet\[viz\]"'):
        save_dice_boxplot(tmp_path / "b.png", acdc_aggregator("paper"))
    paths = write_report(tmp_path, acdc_aggregator("paper"), boxplot=False)
    assert "boxplot" not in paths and not (tmp_path / "dice_boxplot.png").exists()


def test_default_colors_are_distinct():
    colors = default_colors(13)
    assert len(set(colors)) == 13 and all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in colors)


def test_atomic_write_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "deep" / "file.txt"
    atomic_write(target, lambda f: f.write(b"old"))
    with pytest.raises(RuntimeError):
        atomic_write(target, lambda f: (f.write(b"half-written"), (_ for _ in ()).throw(RuntimeError("boom"))))
    assert target.read_bytes() == b"old"
    atomic_write(target, lambda f: f.write(b"new"))
    assert target.read_bytes() == b"new" and [p.name for p in target.parent.iterdir()] == ["file.txt"]
