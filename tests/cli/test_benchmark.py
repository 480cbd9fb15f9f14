"""msvmunet benchmark: the scan-tuning option (bad values are named, good ones reach the Triton launcher)."""

from __future__ import annotations

import pytest

from msvmunet.cli import main

triton_scan = pytest.importorskip("msvmunet.ops.selective_scan.triton_scan")


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
