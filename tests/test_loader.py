import torch
import torch.nn.functional as F

from mpbench.data import normalize, synthetic
from mpbench.data.loader import BatchLoader, random_crop, random_flip


def test_random_crop_is_a_window_of_the_padded_image():
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    out = random_crop(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = F.pad(x, (2, 2, 2, 2))
    offsets = set()
    for i in range(16):
        found = [(dy, dx) for dy in range(5) for dx in range(5)
                 if torch.equal(padded[i, :, dy:dy + 8, dx:dx + 8], out[i])]
        assert found, f"image {i} is not a crop"
        offsets.add(found[0])
    assert len(offsets) > 3  # offsets differ across the batch


def test_random_flip_mirrors_about_half():
    x = torch.randint(0, 256, (400, 3, 4, 4), dtype=torch.uint8)
    out = random_flip(x, torch.Generator().manual_seed(0))
    same = [torch.equal(out[i], x[i]) for i in range(400)]
    mirrored = [torch.equal(out[i], x[i].flip(2)) for i in range(400)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 150 < sum(mirrored) < 250


def test_train_loader_shuffles_per_epoch_deterministically():
    d = synthetic(num_classes=4, num_train=64, num_test=20, image_size=8)
    kw = dict(train=True, mean=d.mean, std=d.std, seed=3)
    a = BatchLoader(d.train_x, d.train_y, 16, **kw)
    b = BatchLoader(d.train_x, d.train_y, 16, **kw)
    ya = [y for _, y in a]
    assert len(ya) == 4 and all(len(y) == 16 for y in ya)
    assert all(torch.equal(u, v) for u, v in zip(ya, [y for _, y in b]))
    xa = [x for x, _ in a]
    assert all(torch.equal(u, v) for u, v in zip(xa, [x for x, _ in b]))
    a.set_epoch(1)
    assert not all(torch.equal(u, v) for u, v in zip(ya, [y for _, y in a]))
    assert sorted(torch.cat(ya).tolist()) == sorted(d.train_y.tolist())


def test_eval_loader_covers_every_image_in_order_unaugmented():
    d = synthetic(num_classes=4, num_train=64, num_test=20, image_size=8)
    test = BatchLoader(d.test_x, d.test_y, 8, train=False, mean=d.mean, std=d.std)
    batches = list(test)
    assert len(test) == 3 and [len(y) for _, y in batches] == [8, 8, 4]
    assert torch.equal(torch.cat([y for _, y in batches]), d.test_y)
    assert torch.allclose(torch.cat([x for x, _ in batches]), normalize(d.test_x, d.mean, d.std))


def test_shards_partition_an_epoch():
    d = synthetic(num_classes=4, num_train=64, num_test=20, image_size=8)
    seen = []
    for rank in range(2):
        ld = BatchLoader(d.train_x, d.train_y, 8, train=True, mean=d.mean, std=d.std, seed=1,
                         shard=(rank, 2), padding=0, flip=False)
        seen.append(torch.cat([x for x, _ in ld]))
    full = torch.cat(seen)
    assert full.shape[0] == 64
    assert torch.unique(full.flatten(1), dim=0).shape[0] == 64  # no image twice
