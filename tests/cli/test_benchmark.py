"""msvmunet benchmark: --scan-tuning and --inductor (bad values named, good ones reach the launcher, torch.compile)."""

from __future__ import annotations

import pytest

from msvmunet.cli import main

triton_scan = pytest.importorskip("msvmunet.ops.selective_scan.triton_scan", reason="Triton is not installed (pip install 'msvm-unet[triton]')")


@pytest.mark.parametrize("item, message", [("bogus=1", "FIELD one of"), ("chunks=abc", "chunks takes a whole number"),
                                           ("per_thread=maybe", "per_thread takes 1 or 0"), ("block_l=", "FIELD=VALUE")])
def test_bad_scan_tuning_is_named(item, message, capsys):
    assert main(["benchmark", "--batch", "1", "--scan-tuning", item]) != 0
    err = capsys.readouterr().err
    assert item in err and message in err


def test_scan_tuning_reaches_the_launcher(monkeypatch):
    from msvmunet.cli.benchmark import set_scan_tuning

    monkeypatch.setattr(triton_scan, "tuning", triton_scan.Tuning())
    set_scan_tuning(["per_thread=0", "chunks=4", "block_l=16"])
    assert triton_scan.tuning == triton_scan.Tuning(per_thread=False, chunks=4, block_l=16)
    assert triton_scan.block_steps(1, 3136, True) == 16


@pytest.mark.parametrize("item, message", [("no_such_setting=1", "setting of torch._inductor.config"),
                                           ("combo_kernels=maybe", "combo_kernels takes a value of type bool"),
                                           ("max_fusion_size=big", "max_fusion_size takes a value of type int"),
                                           ("combo_kernels=", "FIELD=VALUE")])
def test_bad_inductor_option_is_named(item, message, capsys):
    assert main(["benchmark", "--batch", "1", "--compile", "--inductor", item]) != 0
    err = capsys.readouterr().err
    assert item in err and message in err


def test_inductor_option_needs_compile_without_mode(capsys):
    assert main(["benchmark", "--batch", "1", "--inductor", "combo_kernels=1"]) != 0
    assert "--compile" in capsys.readouterr().err
    assert main(["benchmark", "--batch", "1", "--compile", "--compile-mode", "default", "--inductor",
                 "combo_kernels=1"]) != 0
    assert "--compile-mode" in capsys.readouterr().err


def test_inductor_options_reach_torch_compile(monkeypatch, tmp_path):
    import json

    import torch

    calls = []

    def fake_compile(module, **kwargs):  # records the settings; the step runs eagerly
        calls.append(kwargs)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    out = tmp_path / "bench.json"
    assert main(["benchmark", "--device", "cpu", "--batch", "2", "--size", "32", "--mode", "train", "--compile",
                 "--inductor", "combo_kernels=1", "max_fusion_size=32", "--warmup", "0", "--repeats", "1",
                 "--json", str(out)]) == 0
    expected = {"combo_kernels": True, "max_fusion_size": 32}
    half = {"mode": None, "options": expected, "backend": "inductor"}
    assert calls == [half, half, {"mode": None, "options": expected}]  # the encoder and decoder halves, the loss
    assert json.loads(out.read_text())["inductor"] == expected
