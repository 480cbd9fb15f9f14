"""Time one phantom case: making it, and writing it as training slices and as a test volume.

    python benchmarks/bench_phantom.py --size 512 --slices 123 --repeats 2

Prints CPU seconds (this process) and wall seconds for each part: CPU time is what to compare on a
machine shared with other jobs. The whole build is timed with the command itself:
``time msvmunet phantom --size 512 --slices 123 --cases 30 --output DIR``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from msvmunet.data import phantom_case, synapse_preprocessing  # noqa: E402
from msvmunet.data.prepare import write_synapse_case  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--slices", type=int, default=123)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    prep = synapse_preprocessing()
    affine = np.diag([400.0 / args.size, 400.0 / args.size, 2.5 * 48 / args.slices, 1.0])
    with tempfile.TemporaryDirectory() as out:
        for seed in range(args.repeats):
            times = [(time.process_time(), time.perf_counter())]
            hu, label = phantom_case(np.random.default_rng(seed), slices=args.slices, size=args.size)
            times.append((time.process_time(), time.perf_counter()))
            image = prep.apply(hu.transpose(2, 1, 0), affine)
            target = prep.apply_label(label.transpose(2, 1, 0), affine)
            for test in (False, True):
                write_synapse_case(Path(out), f"case{seed}", image, target, test=test, spacing=prep.spacing(affine))
                times.append((time.process_time(), time.perf_counter()))
            parts = ("make", f"write {args.slices} npz slices", "write the h5 volume")
            print(f"case {seed}: " + ", ".join(
                f"{name} {b[0] - a[0]:.2f} s CPU ({b[1] - a[1]:.2f} s wall)"
                for name, a, b in zip(parts, times, times[1:])), flush=True)


if __name__ == "__main__":
    main()
