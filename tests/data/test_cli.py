import numpy as np

from msvmunet.cli import main


def test_phantom_and_check_data_commands(tmp_path, capsys):
    out = tmp_path / "ph"
    assert main(["phantom", "--out", str(out), "--cases", "3", "--size", "20", "--slices", "5"]) == 0
    assert main(["check-data", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "synapse dataset, 9 classes" in text and "no problems found" in text and "aorta" in text
    np.savez(out / "train_npz" / "case0001_slice000.npz", image=np.zeros((20, 20), np.float32),
             label=np.full((20, 20), 11.0))
    (out / "train_npz" / "case0001_slice001.npz").write_bytes(b"PK\x03\x04broken")
    assert main(["check-data", str(out), "--no-progress"]) == 1
    text = capsys.readouterr().out
    assert "2 problem(s)" in text and "case0001_slice000.npz" in text and "case0001_slice001.npz" in text


def test_prepare_commands(btcv_raw, acdc_raw, tmp_path, capsys):
    assert main(["prepare", "synapse", "--raw", str(btcv_raw), "--out", str(tmp_path / "s"), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "warning:" in text and "train: 2 cases, 10 files" in text and "test: 2 cases" in text
    assert main(["prepare", "acdc", "--raw", str(acdc_raw), "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    assert "train: 8 cases" in capsys.readouterr().out
    assert main(["check-data", str(tmp_path / "a"), "--no-progress"]) == 0
    assert main(["prepare", "synapse", "--raw", str(tmp_path / "none"), "--out", str(tmp_path / "x")]) == 1
    assert "RawData/Training" in capsys.readouterr().err
