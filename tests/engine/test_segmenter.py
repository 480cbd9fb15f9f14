"""The Segmenter: TTA, ensembles, keep-largest, arrays vs files, checkpoints without size or preprocessing."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest
import torch

import msvmunet
from msvmunet import CheckpointError, ConfigError
from msvmunet.cli import main
from msvmunet.data import synapse_preprocessing
from msvmunet.engine import Segmenter, evaluate, keep_largest_component, predict, predict_volume

from .conftest import nano_checkpoint

SIZE = 32


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Two untrained nano checkpoints at 32 x 32 with Synapse preprocessing, and a 'converted' one (none)."""
    folder = tmp_path_factory.mktemp("ckpts")
    prep = synapse_preprocessing(SIZE).to_dict()
    a = nano_checkpoint(folder / "ensemble" / "a.pt", 0, preprocessing=prep)
    b = nano_checkpoint(folder / "ensemble" / "b.pt", 1, preprocessing=prep)
    bare = nano_checkpoint(folder / "converted.pt", 2, source="converted from official checkpoint x.pth")
    return a, b, bare


def _ct(shape, seed=0):
    """Raw CT-like intensities (HU) with some structure."""
    rng = np.random.default_rng(seed)
    return (rng.normal(50, 150, size=shape)).astype(np.float32)


class _Symmetric(torch.nn.Module):
    """A conv net whose kernels are symmetric under both mirrorings: exactly flip-equivariant."""

    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 3, 3, padding=1)
        with torch.no_grad():
            for conv in (self.conv1, self.conv2):
                w = conv.weight
                w.copy_(w + w.flip(-1) + w.flip(-2) + w.flip(-2, -1))

    def forward(self, x):
        return self.conv2(torch.tanh(self.conv1(x)))


def test_tta_of_a_flip_equivariant_model_equals_no_tta():
    volume = np.random.default_rng(0).random((5, SIZE, SIZE)).astype(np.float32)
    net = _Symmetric()
    plain, p_plain = predict_volume(net, volume, size=SIZE, probabilities=True)
    tta, p_tta = predict_volume(net, volume, size=SIZE, tta=True, probabilities=True)
    assert np.allclose(p_tta, p_plain, atol=1e-6)
    assert np.array_equal(tta, plain)


def test_tta_is_the_mean_over_mirrored_inputs_of_a_real_model(ckpts):
    """On MSVM-UNet (not equivariant) TTA differs from one pass and equals the average of four passes
    on mirrored volumes, mirrored back."""
    model = msvmunet.load_model(ckpts[0])
    volume = np.random.default_rng(1).random((3, SIZE, SIZE)).astype(np.float32)
    _, p_tta = predict_volume(model, volume, size=SIZE, tta=True, probabilities=True)
    passes = []
    for axes in ((), (2,), (1,), (1, 2)):
        flipped = np.ascontiguousarray(np.flip(volume, axes) if axes else volume)
        _, p = predict_volume(model, flipped, size=SIZE, probabilities=True)
        passes.append(np.flip(p, tuple(a + 1 for a in axes)) if axes else p)  # (D, C, H, W): shift the axes
    assert np.allclose(p_tta, np.mean(passes, axis=0), atol=1e-5)
    assert not np.allclose(p_tta, passes[0], atol=1e-3)


def _count_forwards(models):
    calls = []
    handles = [m.register_forward_hook(lambda mod, inp, out, i=i: calls.append((i, inp[0].shape[0])))
               for i, m in enumerate(models)]
    return calls, handles


@pytest.mark.parametrize("tta", [False, True], ids=["plain", "tta"])
def test_tta_and_ensembles_run_batched(ckpts, tta):
    seg = Segmenter(list(ckpts[:2]), device="cpu", tta=tta, batch_size=8)
    calls, handles = _count_forwards(seg.models)
    volume = _ct((10, 40, 36))
    seg(volume)
    for h in handles:
        h.remove()
    per_pass = 8 // 4 if tta else 8  # slices per forward pass; the mirrored copies fill the batch
    passes = -(-10 // per_pass)
    for member in (0, 1):
        sizes = [n for i, n in calls if i == member]
        assert len(sizes) == passes  # one forward per chunk and member, not one per mirroring
        assert sizes[0] == 8 and sum(sizes) == 10 * (4 if tta else 1)


def test_an_ensemble_averages_its_members_and_of_one_checkpoint_equals_it(ckpts):
    a, b, _ = ckpts
    volume = _ct((4, 40, 36), seed=3)
    labels_a, probs_a = Segmenter(a, device="cpu")(volume, probabilities=True)
    _, probs_b = Segmenter(b, device="cpu")(volume, probabilities=True)
    labels_aa, probs_aa = Segmenter([a, a], device="cpu")(volume, probabilities=True)
    assert np.allclose(probs_aa, probs_a, atol=1e-6) and np.array_equal(labels_aa, labels_a)
    labels_ab, probs_ab = Segmenter(a.parent, device="cpu")(volume, probabilities=True)  # the folder: a.pt, b.pt
    assert probs_ab.shape == (9, 4, 40, 36)
    assert np.allclose(probs_ab, (probs_a + probs_b) / 2, atol=1e-6)
    assert np.array_equal(labels_ab, probs_ab.argmax(0))
    assert np.allclose(probs_ab.sum(0), 1.0, atol=1e-5)


def test_an_ensemble_refuses_members_that_differ(ckpts, tmp_path):
    a = ckpts[0]
    acdc_like = nano_checkpoint(tmp_path / "other.pt", 5, preprocessing=synapse_preprocessing(64).to_dict())
    with pytest.raises(ConfigError, match=r"a\.pt and .*other\.pt differ in network size \(32 vs 64\)"):
        Segmenter([a, acdc_like], device="cpu")
    nano_checkpoint(tmp_path / "four.pt", num_classes=4,
                    preprocessing=synapse_preprocessing(SIZE).to_dict() | {"class_names": ["b", "x", "y", "z"]})
    with pytest.raises(ConfigError, match=r"a\.pt and .*four\.pt differ in classes \(9 vs 4\)"):
        Segmenter([a, tmp_path / "four.pt"], device="cpu")


def test_keep_largest_on_two_blobs():
    labels = np.zeros((6, 12, 12), np.uint8)
    labels[1:4, 1:5, 1:5] = 1        # 36 voxels: kept
    labels[4:6, 8:10, 8:10] = 1      # 8 voxels, apart: removed
    labels[1:3, 7:9, 1:3] = 2        # class 2: 8 voxels
    labels[3, 9, 3] = 2              # touches the block at a corner only: one component with full connectivity
    labels[5, 0, 11] = 2             # a lone voxel: removed
    out = keep_largest_component(labels, [1, 2])
    expected = labels.copy()
    expected[4:6, 8:10, 8:10] = 0
    expected[5, 0, 11] = 0
    assert np.array_equal(out, expected)
    assert np.array_equal(keep_largest_component(labels, [2])[4:6, 8:10, 8:10], labels[4:6, 8:10, 8:10])
    assert keep_largest_component(labels, []).tolist() == labels.tolist()


def test_keep_largest_class_names_and_errors(ckpts):
    seg = Segmenter(ckpts[0], device="cpu", keep_largest="liver,1")
    assert seg.keep_largest == (5, 1)
    assert Segmenter(ckpts[0], device="cpu", keep_largest=True).keep_largest == tuple(range(1, 9))
    with pytest.raises(ConfigError, match="unknown class 'livr'"):
        Segmenter(ckpts[0], device="cpu", keep_largest="livr")


def test_segmenter_on_arrays_equals_predict_on_nifti(ckpts, tmp_path):
    seg = Segmenter(ckpts[0], device="cpu", tta=True)
    volume = _ct((5, 40, 36), seed=4)  # (Z, H, W)
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(volume.transpose(2, 1, 0), np.diag([0.7, 0.7, 2.0, 1.0])), str(path))
    out = predict(ckpts[0], [path], tmp_path / "out", tta=True, device="cpu", quiet=True)[0]
    from_file = np.asarray(nib.load(str(out)).dataobj).transpose(2, 1, 0)
    assert np.array_equal(seg(volume), from_file)
    assert np.array_equal(seg.predict_file(path).transpose(2, 1, 0), from_file)

    slice_2d = volume[2]
    path2 = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(slice_2d.T[:, :, None], np.eye(4)), str(path2))
    out2 = predict(ckpts[0], [path2], tmp_path / "slice_seg.nii.gz", tta=True, device="cpu", quiet=True)[0]
    labels_2d, probs_2d = seg(slice_2d, probabilities=True)
    assert labels_2d.shape == (40, 36) and probs_2d.shape == (9, 40, 36)
    assert np.array_equal(labels_2d, np.asarray(nib.load(str(out2)).dataobj)[:, :, 0].T)


def test_keep_largest_in_predict_and_evaluate(ckpts, tiny_phantom, tmp_path):
    seg = Segmenter(ckpts[1], device="cpu", keep_largest=True)
    volume = _ct((6, 32, 32), seed=5)
    raw = Segmenter(ckpts[1], device="cpu")(volume)
    assert np.array_equal(seg(volume), keep_largest_component(raw, range(1, 9)))
    summaries = evaluate(ckpts[1], tiny_phantom, output=tmp_path / "eval", device="cpu", keep_largest="all",
                         overlays=0, boxplot=False, quiet=True)
    assert set(summaries) == {"paper", "strict", "paper_keep_largest", "strict_keep_largest"}
    assert (tmp_path / "eval" / "paper_keep_largest" / "summary.json").is_file()
    assert "largest component kept" in (tmp_path / "eval" / "paper_keep_largest" / "summary.md").read_text()


def test_checkpoints_without_size_or_preprocessing_are_never_guessed(ckpts, tmp_path, capsys):
    bare = ckpts[2]
    with pytest.raises(ConfigError, match="stores no network input size.*--image-size"):
        Segmenter(bare, device="cpu")
    seg = Segmenter(bare, device="cpu", image_size=SIZE)
    with pytest.raises(ConfigError, match="stores no preprocessing.*--preprocessing synapse"):
        seg(_ct((2, 32, 32)))
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(_ct((32, 32, 3)), np.eye(4)), str(path))
    args = ["predict", str(path), "-o", str(tmp_path / "o"), "--checkpoint", str(bare), "--device", "cpu"]
    assert main(args) == 1
    assert "--image-size" in capsys.readouterr().err
    assert main(args + ["--image-size", "32"]) == 1
    assert "--preprocessing synapse" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(args + ["--image-size", "32", "--preprocessing", "synapse"]) == 0
    assert (tmp_path / "o" / "vol_seg.nii.gz").is_file()


def test_a_file_that_is_no_checkpoint_is_named_as_such(tmp_path, capsys):
    note = tmp_path / "notes.pt"
    note.write_text("hello")
    pickled = tmp_path / "pickled.pt"
    torch.save({"weights": np.zeros(3)}, pickled)
    with pytest.raises(CheckpointError, match="notes.pt: not an msvmunet/PyTorch checkpoint"):
        Segmenter(note, device="cpu")
    scan = tmp_path / "s.png"
    scan.write_bytes(b"")
    for path, words in ((note, "not an msvmunet/PyTorch checkpoint"), (pickled, "pickled Python object")):
        assert main(["predict", str(scan), "-o", str(tmp_path / "o"), "--checkpoint", str(path)]) == 1
        err = capsys.readouterr().err
        assert words in err and "weights_only" not in err and "trust" not in err


def test_convert_can_store_the_preprocessing_and_size(tmp_path, capsys):
    from msvmunet import create_model, to_official_state_dict

    official = tmp_path / "official.pth"
    torch.save(to_official_state_dict(create_model("nano", num_classes=9)), official)
    assert main(["convert", str(official), str(tmp_path / "a.pt"), "--preprocessing", "synapse"]) == 1
    assert "--preprocessing and --image-size go together" in capsys.readouterr().err
    assert main(["convert", str(official), str(tmp_path / "b.pt"), "--preprocessing", "synapse",
                 "--image-size", "32"]) == 0
    seg = Segmenter(tmp_path / "b.pt", device="cpu")
    assert seg.size == 32 and seg.preprocessing == synapse_preprocessing(32)
    assert seg(_ct((2, 40, 40))).shape == (2, 40, 40)


def test_tta_warns_for_a_model_trained_without_flips(tmp_path):
    prep = synapse_preprocessing(SIZE).to_dict()
    plain = nano_checkpoint(tmp_path / "plain.pt", preprocessing=prep, train_config={"augment": False})
    flipped = nano_checkpoint(tmp_path / "flipped.pt", preprocessing=prep, train_config={"augment": True})
    with pytest.warns(UserWarning, match="plain.pt was trained without augmentation"):
        Segmenter(plain, device="cpu", tta=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Segmenter(flipped, device="cpu", tta=True)
        Segmenter(plain, device="cpu")


def test_evaluate_command_with_an_ensemble_tta_and_keep_largest(ckpts, tiny_phantom, tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate", "--data", str(tiny_phantom), "--protocol", "paper", "--overlays", "0", "--no-boxplot",
                 "--output", str(out), "--device", "cpu", "--checkpoint", str(ckpts[0]), str(ckpts[1]), "--tta",
                 "--keep-largest=liver,spleen"]) == 0
    text = (out / "paper_keep_largest" / "summary.md").read_text()
    assert "ensemble of 2 checkpoints, test-time augmentation" in text
    assert "largest component kept for classes [5, 7]" in text
    assert "largest component" not in (out / "paper" / "summary.md").read_text()


def test_a_colour_checkpoint_sees_colour_images_in_colour(tmp_path):
    """A network trained on RGB image sets (preprocessing.channels = 3) gets the three colour channels of an
    image, not its grey value repeated."""
    from dataclasses import replace

    from PIL import Image

    rgb = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    for channels, colour in ((3, True), (1, False)):
        prep = replace(synapse_preprocessing(), channels=channels, size=64)
        seg = Segmenter(nano_checkpoint(tmp_path / f"c{channels}.pt", preprocessing=prep.to_dict()), device="cpu")
        seen = []
        seg.models[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
        labels = seg.predict_file(tmp_path / "a.png")
        assert labels.shape == (40, 56)
        x = seen[0]
        assert x.shape[1] == channels
        differ = x.shape[1] == 3 and not torch.equal(x[:, 0], x[:, 1])
        assert differ == colour
