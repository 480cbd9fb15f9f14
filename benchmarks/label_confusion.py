"""Which labels a trained model confuses: the voxel confusion matrix on the test volumes, and for two
chosen classes (default: the kidneys, 3 and 4) the slices where one is predicted as the other.

    python benchmarks/label_confusion.py --checkpoint run/final.pt --data phantom [--pair 3 4]
"""

from __future__ import annotations

import argparse

import numpy as np

from msvmunet.data import open_dataset
from msvmunet.engine import Segmenter


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--pair", type=int, nargs=2, default=(3, 4))
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    seg = Segmenter(args.checkpoint, device=args.device)
    data = open_dataset(args.data)
    k = data.num_classes
    total = np.zeros((k, k), dtype=np.int64)
    a, b = args.pair
    for vol in data.volumes("test"):
        pred = seg.segment_prepared(vol.image)
        total += np.bincount(vol.label.ravel() * k + pred.ravel(), minlength=k * k).reshape(k, k)
        rows = []
        for z in range(vol.label.shape[0]):
            gt, pr = vol.label[z], pred[z]
            swap = int(((gt == a) & (pr == b)).sum() + ((gt == b) & (pr == a)).sum())
            if swap:
                rows.append(f"z={z}: {a}->{b} {int(((gt == a) & (pr == b)).sum())}, {b}->{a} "
                            f"{int(((gt == b) & (pr == a)).sum())} (gt {a}: {int((gt == a).sum())}, gt {b}: {int((gt == b).sum())})")
        print(f"{vol.case}: {len(rows)} of {vol.label.shape[0]} slices mix up {a} and {b}")
        for row in rows:
            print("   ", row)
    recall = total.diagonal() / np.maximum(total.sum(1), 1)
    print("confusion (rows: truth, columns: prediction), voxels:")
    print(total)
    print("recall per class:", np.round(recall, 4).tolist())


if __name__ == "__main__":
    main()
