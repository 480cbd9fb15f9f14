"""ONNX export: an msvmunet checkpoint -> a model that onnxruntime runs without PyTorch.

The graph maps the normalised network input to logits, for any batch and any height and width that are
multiples of 32 (``config.size_multiple``). The selective scan is the torch backend's; its recurrence
becomes one ONNX ``Scan`` (``ops.selective_scan.torch_chunked.linear_scan_exported``). What a deployer must
do before and after the graph is written into the model's metadata (``metadata_props``, keys ``msvmunet.*``):

    slice  = the scan's axial slice, intensities normalised to [0, 1] by ``msvmunet.preprocessing``
             (CT: clip to the HU window and scale; MR: clip to the volume's percentiles and scale)
    x      = (resize(slice, input_size x input_size, cubic spline) - mean) / std     # (B, 1, S, S) float32
    logits = session.run(None, {"image": x})[0]                                      # (B, classes, S, S)
    labels = resize(logits.argmax(1), back to the slice's size, nearest)
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from .._files import atomic_path
from ..errors import ConfigError, ExportError
from .checkpoints import load_file, model_from_checkpoint, network_size
from .msvm_unet import MSVMUNet

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
EXAMPLE_SIDE = 64  # the traced example: two 64 x 64 slices (sizes of 1 would be fixed into the graph)
MAX_SIDE_BLOCKS = 256  # height and width up to 256 x 32 = 8192 pixels
TOLERANCE = 1e-4


@dataclass(frozen=True)
class OnnxExport:
    """What ``export_onnx`` wrote: the file, its metadata, and onnxruntime's relative error against PyTorch on
    the example input (``None`` without onnxruntime)."""

    path: Path
    metadata: dict[str, str]
    relative_error: float | None


def relative_error(output: Any, reference: Any) -> float:
    """||output - reference|| / ||reference|| over all elements (float64)."""
    out = torch.as_tensor(output, dtype=torch.float64)
    ref = torch.as_tensor(reference, dtype=torch.float64)
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


def input_channels(model: MSVMUNet) -> int:
    """Channels of the exported input: 1 for a grey slice when the stem takes 1 or 3 (repeated), else the stem's."""
    stem = model.config.encoder.in_channels
    return 1 if stem in (1, 3) else stem


def onnx_metadata(model: MSVMUNet, checkpoint: Mapping[str, Any]) -> dict[str, str]:
    """The preprocessing contract as ``metadata_props`` strings: stored preprocessing (JSON), input size, mean,
    std, class names, model configuration, and the input/output layouts in words."""
    prep = dict(checkpoint.get("preprocessing") or {})
    classes = list(prep.get("class_names") or checkpoint.get("classes") or range(model.num_classes))
    size, mean, std = network_size(checkpoint), float(prep.get("mean", 0.5)), float(prep.get("std", 0.5))
    resized = f"resized to {size} x {size}" if size else (
        "resized to the size the network was trained at (this checkpoint does not store it: "
        "'msvmunet convert --image-size' adds it)")
    channels = input_channels(model)
    return {
        "msvmunet.format_version": "1",
        "msvmunet.preprocessing": json.dumps(prep or None),
        "msvmunet.input_size": str(size or "unknown"),
        "msvmunet.mean": repr(mean),
        "msvmunet.std": repr(std),
        "msvmunet.classes": json.dumps([str(c) for c in classes]),
        "msvmunet.config": json.dumps(model.config.to_dict()),
        "msvmunet.input": (
            f"{INPUT_NAME}: float32 (batch, {channels}, height, width), height and width multiples of "
            f"{model.config.size_multiple}: slices normalised to [0, 1] by msvmunet.preprocessing, "
            f"{resized} (cubic spline), then (x - {mean}) / {std}"
        ),
        "msvmunet.output": (
            f"{OUTPUT_NAME}: float32 (batch, {model.num_classes}, height, width); labels = argmax over axis 1, "
            "resized back to the slice with nearest neighbour"
        ),
    }


def export_onnx(
    checkpoint: str | os.PathLike | Mapping[str, Any] | MSVMUNet,
    output: str | os.PathLike,
    *,
    overwrite: bool = False,
    verify: bool = True,
) -> OnnxExport:
    """Write ``checkpoint`` (an msvmunet checkpoint file or dict, or a model) as an ONNX model at ``output``.

    Input ``image`` (B, 1, H, W) float32 with dynamic B, H, W (H, W multiples of 32); output ``logits``
    (B, classes, H, W). With ``verify`` and onnxruntime installed, the file is run on the example input and
    must match PyTorch to a relative error of 1e-4.
    """
    output = Path(output)
    if output.suffix != ".onnx":
        raise ConfigError(f"{output}: an ONNX model file must end in .onnx")
    if not output.parent.is_dir():
        raise ConfigError(f"{output}: the folder {output.parent} does not exist; create it or write elsewhere")
    if output.exists() and not overwrite:
        raise ConfigError(f"{output} exists; pass overwrite=True (--force) to replace it")
    model, ckpt = _model_and_checkpoint(checkpoint)
    _require_exporter()
    metadata = onnx_metadata(model, ckpt)
    net = MSVMUNet(model.config)  # a float32 CPU copy in eval mode with the torch scan; the caller's model stays as it is
    net.load_state_dict({k: v.detach().float().cpu() for k, v in model.state_dict().items()})
    net.eval().set_scan_backend("torch")
    example = torch.randn(2, input_channels(net), EXAMPLE_SIDE, EXAMPLE_SIDE)
    side = torch.export.Dim("side", min=1, max=MAX_SIDE_BLOCKS)
    width = torch.export.Dim("width", min=1, max=MAX_SIDE_BLOCKS)
    m = net.config.size_multiple
    dynamic = {"x": {0: torch.export.Dim("batch", min=1, max=4096), 2: m * side, 3: m * width}}
    with atomic_path(output) as tmp:
        program = _export(net, example, dynamic)
        program.model.metadata_props.update(metadata)
        program.model.doc_string = metadata["msvmunet.input"] + "\n" + metadata["msvmunet.output"]
        program.save(str(tmp))
        error = _verify(tmp, net, example) if verify else None
    return OnnxExport(output, metadata, error)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX model file (for a deployer: ``msvmunet.input_size``, ...)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}


def _model_and_checkpoint(source: Any) -> tuple[MSVMUNet, Mapping[str, Any]]:
    if isinstance(source, MSVMUNet):
        return source, {}
    obj, name = (load_file(source), str(source)) if isinstance(source, (str, os.PathLike)) else (source, "<checkpoint>")
    return model_from_checkpoint(obj, name), obj


def _require_exporter() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ConfigError(f'ONNX export needs onnx and onnxscript ({err}); install them: pip install "msvm-unet[onnx]"') from err


def _export(net: MSVMUNet, example: torch.Tensor, dynamic: dict):
    """torch.onnx.export through torch.export (the dynamo exporter); an operator it cannot write is named."""
    quiet = logging.getLogger("torch.onnx")  # its warnings about torchvision operators this model does not use
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return torch.onnx.export(net, (example,), dynamo=True, dynamic_shapes=dynamic, input_names=[INPUT_NAME],
                                 output_names=[OUTPUT_NAME], optimize=True, verbose=False)
    except Exception as err:  # the exporter's own error types are private
        text = str(err)
        ops = sorted(set(re.findall(r"op='([\w.]+)'", text)) | set(re.findall(r"operator '([\w:.]+)'", text)))
        what = f"operator(s) {', '.join(ops)}" if ops else text.splitlines()[0] if text else type(err).__name__
        raise ExportError(f"the ONNX exporter cannot write {what}; no model was written") from err
    finally:
        quiet.setLevel(level)


def _verify(path: Path, net: MSVMUNet, example: torch.Tensor) -> float | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: not its notes on initializers it drops
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = net(example)
    error = relative_error(session.run(None, {INPUT_NAME: example.numpy()})[0], expected)
    if not error < TOLERANCE:
        raise ExportError(f"the exported model differs from PyTorch by a relative error of {error:.2e} "
                          f"(more than {TOLERANCE:g}); no model was written")
    return error


__all__ = ["OnnxExport", "export_onnx", "onnx_metadata", "read_metadata", "relative_error"]
