import torch
from torch.utils.data import DataLoader, DistributedSampler, SequentialSampler

from msvmunet.data import AugmentConfig, AugmentedBatches, Augmenter, BatchKeys, open_dataset


def test_batch_keys_carry_epoch_and_step_and_drop_the_partial_batch():
    keys = BatchKeys(SequentialSampler(range(7)), 3)
    assert len(keys) == 3 and list(keys) == [(0, 0, [0, 1, 2]), (0, 1, [3, 4, 5]), (0, 2, [6])]
    keys = BatchKeys(SequentialSampler(range(7)), 3, drop_last=True)
    keys.set_epoch(4)
    assert len(keys) == 2 and [k[:2] for k in keys] == [(4, 0), (4, 1)]


def test_batch_keys_reshuffle_a_distributed_sampler_per_epoch():
    keys = BatchKeys(DistributedSampler(range(40), num_replicas=1, rank=0, shuffle=True, seed=3), 8)
    first = [i for _, _, batch in keys for i in batch]
    keys.set_epoch(1)
    second = [i for _, _, batch in keys for i in batch]
    assert sorted(first) == sorted(second) == list(range(40)) and first != second


def _loader(slices, augmenter, workers):
    keys = BatchKeys(DistributedSampler(slices, num_replicas=1, rank=0, shuffle=True, seed=0), 5)
    keys.set_epoch(2)
    return DataLoader(AugmentedBatches(slices, augmenter, seed=7), sampler=keys, batch_size=None,
                      num_workers=workers)


def test_batches_are_augmented_in_workers_the_same_whatever_their_number(phantom_dir):
    slices = open_dataset(phantom_dir).slices("train", size=24)
    augmenter = Augmenter(AugmentConfig(min_ops=2, max_ops=4))
    inline = list(_loader(slices, augmenter, 0))
    workers = list(_loader(slices, augmenter, 2))
    plain = list(_loader(slices, None, 0))
    assert len(inline) == len(workers) == len(plain) == 7  # 32 slices in batches of 5
    for a, b, p in zip(inline, workers, plain):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
        assert a["name"] == b["name"] == p["name"] and a["augment_s"] > 0 and p["augment_s"] == 0
        assert a["image"].shape == p["image"].shape and a["label"].dtype == torch.uint8
    assert not all(torch.equal(a["image"], p["image"]) for a, p in zip(inline, plain))
    # without an augmenter a batch is the slices themselves, stacked
    first = plain[0]
    assert torch.equal(first["image"][1], slices[slices.names.index(first["name"][1])]["image"])
