"""CPU time of one slice through the exported ONNX model (onnxruntime) beside PyTorch eager.

    python benchmarks/bench_onnx.py --model tiny_0230s --size 224 --threads 2

Exports a randomly initialised model (``msvmunet.export_onnx``), then times onnxruntime's CPU provider and
PyTorch's eager forward (``inference_mode``, torch scan backend) on the same input, each with the same number
of threads: ``--warmup`` runs of each, then ``--repeats`` rounds that time one run of each (interleaved, so that
both see the same load on a shared machine); medians of the wall-clock time and of the process's CPU time (with
one thread on a busy machine the CPU time is the better measure: it leaves out the time other processes held the
core). Prints both and their relative error.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from msvmunet import create_model, export_onnx
from msvmunet.models.export import relative_error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny_0230s")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--classes", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2, help="threads for both runtimes")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--onnx", type=Path, default=None,
                        help="keep the exported model here (default: a temp file); an existing file is reused")
    args = parser.parse_args()

    import onnxruntime

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=args.classes, scan_backend="torch").eval()
    x = torch.randn(args.batch, 1, args.size, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.onnx or Path(tmp) / "model.onnx"
        start, exported = time.perf_counter(), not path.exists()
        if exported:
            export_onnx(model, path)
        made = f"exported in {time.perf_counter() - start:.0f} s" if exported else "reused"
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {"image": x.numpy()}
        load = os.getloadavg()[0]
        runs = {"onnxruntime": lambda: session.run(None, feed)[0], "torch": lambda: model(x)}
        wall: dict[str, list[float]] = {name: [] for name in runs}
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        with torch.inference_mode():
            for _ in range(args.warmup):
                for run in runs.values():
                    run()
            for _ in range(args.repeats):
                for name, run in runs.items():
                    start, start_cpu = time.perf_counter(), time.process_time()
                    run()
                    wall[name].append(time.perf_counter() - start)
                    cpu[name].append(time.process_time() - start_cpu)
            error = relative_error(runs["onnxruntime"](), model(x))
        size_mb = path.stat().st_size / 2**20
    ms = {name: (1e3 * statistics.median(wall[name]), 1e3 * statistics.median(cpu[name])) for name in runs}
    print(f"machine      : {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}, {args.threads} thread(s) each; load average {load:.1f} before timing, "
          f"{os.getloadavg()[0]:.1f} after")
    print(f"model        : {args.model}, input {args.batch}x1x{args.size}x{args.size} float32; ONNX file {size_mb:.0f} MiB, "
          f"{made}")
    for name, (t_wall, t_cpu) in ms.items():
        print(f"{name:<13}: {t_wall:.1f} ms wall clock, {t_cpu:.1f} ms CPU time (medians of {args.repeats}, "
              f"{args.warmup} warm-up)")
    print(f"relative error onnxruntime vs torch: {error:.1e}")


if __name__ == "__main__":
    main()
