"""Evaluate a checkpoint on a dataset's volumes under the paper's protocol and the strict one."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

from ..errors import ConfigError
from .segmenter import PathLike, Segmenter, load_for_inference, network_size, resolve_classes  # noqa: F401

PAPER_NAMES = {
    ("aorta", "gallbladder", "left_kidney", "right_kidney", "liver", "pancreas", "spleen", "stomach"): "SYNAPSE",
    ("RV", "Myo", "LV"): "ACDC",
}


def label_set(class_names: Sequence[str]):
    """Display names and colours of the foreground classes (the paper's for Synapse and ACDC)."""
    from .. import metrics

    foreground = tuple(class_names[1:])
    known = PAPER_NAMES.get(foreground)
    if known:
        return getattr(metrics, known)
    return metrics.LabelSet(names=foreground, colors=metrics.default_colors(len(foreground)))


def evaluate(
    checkpoint: PathLike | Sequence[PathLike],
    data: str | Path,
    *,
    output: str | Path = "runs/evaluation",
    split: str = "test",
    cases: Sequence[str] | None = None,
    protocols: Sequence[str] = ("paper", "strict"),
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 32,
    overlays: int = 3,
    boxplot: bool = True,
    backend: str = "auto",
    tta: bool = False,
    keep_largest: bool | str | Sequence[int | str] | None = None,
    image_size: int | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Segment every volume of ``split`` slice by slice and measure it; write the reports.

    ``checkpoint`` may be several files or a folder (an ensemble); ``tta`` and ``keep_largest`` as
    :class:`Segmenter`. Returns ``{protocol: Summary}``, and with ``keep_largest`` also
    ``{protocol + "_keep_largest": Summary}`` (the same predictions post-processed). Files:
    ``<output>/<report>/{cases.csv, summary.md, summary.json, dice_boxplot.png}``,
    ``<output>/pooled/{images.csv, summary.md, summary.json}`` (pixel metrics of the confusion matrix
    summed over the cases, as 2-D papers report them) and ``<output>/overlays/<case>_z<k>.png`` for the
    first ``overlays`` cases.
    """
    from .. import metrics
    from ..data import open_dataset

    seg = Segmenter(checkpoint, device=device, tta=tta, precision=precision, batch_size=batch_size,
                    backend=backend, image_size=image_size)
    dataset = open_dataset(data)
    if dataset.num_classes != seg.num_classes:
        raise ConfigError(
            f"{seg.paths[0]} predicts {seg.num_classes} classes but {data} has {dataset.num_classes}; "
            "evaluate on the dataset the model was trained for"
        )
    in_channels = seg.models[0].config.encoder.in_channels
    if dataset.preprocessing.model_channels != in_channels:  # several-channel data
        raise ConfigError(f"{seg.paths[0]} takes {in_channels} input channels but {data} has "
                          f"{dataset.preprocessing.channels}; evaluate on the dataset the model was trained for")
    seg.keep_largest = resolve_classes(keep_largest, dataset.class_names)
    labels = label_set(dataset.class_names)
    reports = [(p, p) for p in protocols] + [(f"{p}_keep_largest", p) for p in protocols if seg.keep_largest]
    aggregators = {name: metrics.Aggregator(labels.names, protocol=p) for name, p in reports}
    output = Path(output)
    pooled = metrics.PooledConfusion(labels.names)  # pixel metrics pooled over images (VM-UNet's ISIC table)
    missing_spacing = []
    total = len(cases) if cases is not None else len(dataset.cases(split))
    progress = tqdm(dataset.volumes(split, cases=cases), total=total, desc=f"evaluate {split}", unit="case",
                    disable=quiet, leave=False, dynamic_ncols=True)
    for i, volume in enumerate(progress):
        pred = seg.segment_prepared(volume.image, postprocess=False)
        post = seg.postprocess(pred)
        for name, agg in aggregators.items():
            spacing = None
            if agg.protocol == "strict":
                spacing = volume.spacing
                if spacing is None:
                    spacing = 1.0
                    missing_spacing.append(volume.case)
            agg.add_case(volume.case, post if name.endswith("_keep_largest") else pred, volume.label, spacing=spacing)
        pooled.add(volume.case, pred, volume.label)
        if i < overlays:
            grey = volume.image if volume.image.ndim == 3 else volume.image.mean(axis=1)  # (D, C, H, W): channel mean
            metrics.save_case_overlays(output / "overlays", volume.case, grey, volume.label, pred, labels.colors,
                                      names=labels.names)
        if not quiet:
            dice = aggregators[protocols[0]].cases[volume.case]
            progress.write(f"{volume.case}: mean Dice {sum(r.dice for r in dice) / len(dice):.4f} ({protocols[0]})")
    note = "; ".join(filter(None, [str(seg.checkpoint.get("selection") or ""), seg.describe()]))
    summaries = {}
    for protocol, agg in aggregators.items():
        kept = protocol.endswith("_keep_largest") and f"largest component kept for classes {list(seg.keep_largest)}"
        text = "; ".join(filter(None, [note, kept]))
        if agg.protocol == "strict" and missing_spacing:
            text += (f"{'; ' if text else ''}no voxel spacing stored for {len(set(missing_spacing))} case(s): "
                     "their distances are in voxels, not mm")
        metrics.write_report(output / protocol, agg, selection=text, boxplot=boxplot and _has_matplotlib(),
                             colors=labels.colors)
        summaries[protocol] = agg.summary()
        if not quiet:
            print(metrics.format_summary(summaries[protocol], text))
    # pooled pixel metrics, per image and in total -------------------------------------------
    metrics.write_pooled_report(output / "pooled", pooled)
    if not quiet:
        print(metrics.format_pooled(pooled))
    return summaries


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
