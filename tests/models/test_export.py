"""ONNX export: onnxruntime against PyTorch on the nano and tiny_0230s models (dynamic batch and size), the
preprocessing contract in the metadata, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

from msvmunet import create_model, export_onnx, load_model, save_model  # noqa: E402
from msvmunet.cli import main  # noqa: E402
from msvmunet.data.preprocessing import acdc_preprocessing  # noqa: E402
from msvmunet.models.export import read_metadata  # noqa: E402

from ..conftest import ROOT, rel_err  # noqa: E402


def onnx_logits(path, x: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"] and [o.name for o in session.get_outputs()] == ["logits"]
    return torch.from_numpy(session.run(None, {"image": x.numpy()})[0])


@pytest.fixture(scope="module")
def nano_export(tmp_path_factory):
    """A nano checkpoint with ACDC preprocessing at 64 px, exported by the command line in a subprocess."""
    folder = tmp_path_factory.mktemp("nano")
    torch.manual_seed(3)
    model = create_model("nano", num_classes=4, in_channels=1)
    prep = acdc_preprocessing(size=64)
    ckpt = save_model(model, folder / "final.pt", preprocessing=prep.to_dict(), classes=list(prep.class_names),
                      train_config={"image_size": 64})
    out = folder / "model.onnx"
    result = subprocess.run([sys.executable, "-m", "msvmunet", "export", str(ckpt), str(out)], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-2000:]
    return ckpt, out, prep, result.stdout


@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (3, 1, 64, 64), (2, 1, 96, 160), (1, 1, 32, 32)],
                         ids=lambda s: "x".join(map(str, s)))
def test_nano_onnx_matches_pytorch(nano_export, shape):
    ckpt, out, _, _ = nano_export
    x = torch.randn(*shape)
    with torch.no_grad():
        expected = load_model(ckpt)(x)
    got = onnx_logits(out, x)
    assert got.shape == expected.shape == (shape[0], 4, *shape[2:])
    assert rel_err(got, expected) < 1e-4
    assert torch.equal(got.argmax(1), expected.argmax(1))


def test_metadata_holds_the_preprocessing_contract(nano_export):
    _, out, prep, stdout = nano_export
    meta = read_metadata(out)
    assert json.loads(meta["msvmunet.preprocessing"]) == prep.to_dict()
    assert meta["msvmunet.input_size"] == "64" and float(meta["msvmunet.mean"]) == prep.mean
    assert float(meta["msvmunet.std"]) == prep.std
    assert json.loads(meta["msvmunet.classes"]) == ["background", "RV", "Myo", "LV"]
    assert json.loads(meta["msvmunet.config"])["num_classes"] == 4
    assert "multiples of 32" in meta["msvmunet.input"] and "wrote" in stdout and "relative error" in stdout


@pytest.mark.slow
def test_tiny_0230s_onnx_dynamic_batch_and_size(tmp_path):
    torch.manual_seed(4)
    model = create_model("tiny_0230s", num_classes=9).eval()
    result = export_onnx(model, tmp_path / "tiny.onnx")
    assert result.relative_error is not None and result.relative_error < 1e-4
    assert result.metadata["msvmunet.input_size"] == "unknown"  # nothing stored: not guessed
    assert "does not store it" in result.metadata["msvmunet.input"]
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    for shape in [(1, 1, 64, 64), (2, 1, 64, 64), (2, 1, 96, 128)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = model(x)
        got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
        assert got.shape == expected.shape and rel_err(got, expected) < 1e-4, shape
    assert {m.scan_backend for m in model.modules() if hasattr(m, "scan_backend")} == {"auto"}  # left as it was


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    state_dict = tmp_path / "weights.pt"
    torch.save(create_model("nano", num_classes=2).state_dict(), state_dict)
    existing = tmp_path / "old.onnx"
    existing.write_bytes(b"keep")
    cases = [
        ([str(text), str(tmp_path / "m.onnx")], "not an msvmunet/PyTorch checkpoint"),
        ([str(tmp_path / "missing.pt"), str(tmp_path / "m.onnx")], "not found"),
        ([str(state_dict), str(tmp_path / "m.onnx")], "not an msvmunet checkpoint"),
        ([str(state_dict), str(tmp_path / "no" / "such" / "m.onnx")], "does not exist"),
        ([str(state_dict), str(tmp_path / "m.pt")], "must end in .onnx"),
        ([str(state_dict), str(existing)], "exists; pass"),
    ]
    for args, message in cases:
        assert main(["export", *args]) == 1, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert existing.read_bytes() == b"keep" and not (tmp_path / "m.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.pt", "old.onnx", "weights.pt"]


def test_an_operator_the_exporter_cannot_write_is_named():
    from msvmunet.errors import ExportError
    from msvmunet.models.export import _export

    class CumProd(torch.nn.Module):  # cumprod becomes prims.prod, which torch's ONNX exporter has no function for
        def forward(self, x):
            return torch.cumprod(x, 1)

    with pytest.raises(ExportError, match=r"cannot write operator\(s\) prims.prod; no model was written"):
        _export(CumProd(), torch.rand(2, 3, 8), {"x": {0: torch.export.Dim("batch", min=1, max=64)}})
