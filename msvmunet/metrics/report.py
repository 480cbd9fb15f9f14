"""Report files of an evaluation: per-case CSV, summary as Markdown (the paper's table) and JSON.

Every file is written atomically. Undefined values (strict protocol) are ``nan`` in the CSV, ``null`` in the
JSON and ``n/a`` in the Markdown.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Sequence

from .._files import PathLike, atomic_write_text
from .labels import RGB
from .protocols import METRICS, Aggregator, MetricSummary, Summary

CSV_COLUMNS = ("case", "class_id", "class_name", *METRICS, "pred_voxels", "gt_voxels")
JSON_FORMAT_VERSION = 1


def write_case_csv(path: PathLike, aggregator: Aggregator) -> Path:
    """One row per case and foreground class: ``CSV_COLUMNS``; floats at full precision."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for case, results in aggregator.cases.items():
        for r in results:
            name = aggregator.class_names[r.class_id - 1]
            writer.writerow([case, r.class_id, name, *(repr(float(r.metric(m))) for m in METRICS),
                             r.pred_voxels, r.gt_voxels])
    return atomic_write_text(path, buffer.getvalue())


def summary_to_dict(summary: Summary, selection: str = "") -> dict:
    """The JSON document: protocol, units, counts, per-class and overall values, the caller's selection note."""

    def metric(s: MetricSummary) -> dict:
        return {"mean": _json_float(s.mean), "n_used": s.n_used, "n_undefined": s.n_undefined}

    return {
        "format_version": JSON_FORMAT_VERSION,
        "protocol": summary.protocol,
        "units": {"hd95": summary.units, "asd": summary.units},
        "n_cases": summary.n_cases,
        "selection": selection,
        "metrics": list(METRICS),
        "mean_over_classes": {m: metric(summary.mean[m]) for m in METRICS},
        "classes": [
            {"id": c.class_id, "name": c.name, **{m: metric(c.metrics[m]) for m in METRICS}}
            for c in summary.classes
        ],
    }


def write_summary_json(path: PathLike, summary: Summary, selection: str = "") -> Path:
    text = json.dumps(summary_to_dict(summary, selection), indent=2, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def format_summary(summary: Summary, selection: str = "") -> str:
    """Markdown: the paper's table (mean DSC, mean HD95, DSC per class), then every metric per class.

    DSC and Jaccard in %, distances in the protocol's unit; two decimals as in the paper.
    """
    n = summary.n_cases
    cases = f"{n} case" if n == 1 else f"{n} cases"
    lines = [f"## Evaluation, protocol `{summary.protocol}` ({cases}, distances in {summary.units})", ""]
    if selection:
        lines += [f"Selection: {selection}", ""]
    if summary.protocol == "strict":
        lines += ["Undefined values (an empty mask) are left out of every mean; the counts say how many were used.", ""]
    header = ["DSC (%)", f"HD95 ({summary.units})", *summary.class_names]
    row = [_pct(summary.mean["dice"]), _num(summary.mean["hd95"]), *(_pct(c.metrics["dice"]) for c in summary.classes)]
    lines += _table(header, [row])
    lines.append("")
    header = ["Class", "DSC (%)", f"HD95 ({summary.units})", "Jaccard (%)", f"ASD ({summary.units})",
              "DSC used", "HD95 used"]
    rows = [
        [c.name, _pct(c.metrics["dice"]), _num(c.metrics["hd95"]), _pct(c.metrics["jaccard"]),
         _num(c.metrics["asd"]), f"{c.metrics['dice'].n_used}/{n}", f"{c.metrics['hd95'].n_used}/{n}"]
        for c in summary.classes
    ]
    k = len(summary.classes)
    m = summary.mean
    rows.append(["Mean over classes", _pct(m["dice"]), _num(m["hd95"]), _pct(m["jaccard"]), _num(m["asd"]),
                 f"{m['dice'].n_used}/{k} classes", f"{m['hd95'].n_used}/{k} classes"])
    lines += _table(header, rows)
    return "\n".join(lines) + "\n"


def write_summary_markdown(path: PathLike, summary: Summary, selection: str = "") -> Path:
    return atomic_write_text(path, format_summary(summary, selection))


def write_report(
    out_dir: PathLike, aggregator: Aggregator, selection: str = "", boxplot: bool = True,
    colors: Sequence[RGB] | None = None,
) -> dict[str, Path]:
    """Write ``cases.csv``, ``summary.md``, ``summary.json`` and (with matplotlib) ``dice_boxplot.png`` (boxes in
    ``colors``, by default those of the class names' label set, as in the overlays).

    Returns the written paths by kind: ``cases``, ``markdown``, ``json``, ``boxplot``.
    """
    out_dir = Path(out_dir)
    summary = aggregator.summary()
    paths = {
        "cases": write_case_csv(out_dir / "cases.csv", aggregator),
        "markdown": write_summary_markdown(out_dir / "summary.md", summary, selection),
        "json": write_summary_json(out_dir / "summary.json", summary, selection),
    }
    if boxplot:
        from .figures import save_dice_boxplot

        paths["boxplot"] = save_dice_boxplot(out_dir / "dice_boxplot.png", aggregator, colors)
    return paths


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _num(s: MetricSummary) -> str:
    return "n/a" if math.isnan(s.mean) else f"{s.mean:.2f}"


def _pct(s: MetricSummary) -> str:
    return "n/a" if math.isnan(s.mean) else f"{100 * s.mean:.2f}"


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else x
