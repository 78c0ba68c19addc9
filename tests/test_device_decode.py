"""``dataset.decode: device`` (mpbench.data.device_decode) on CPU, where torchvision decodes
with libjpeg-turbo in the main process; the CUDA (nvJPEG) run of the same code is in
tests/test_cuda.py. Independent references: PIL's decode of the same files (the CPU
pipeline's decoder), and the geometry of RandomResizedCrop at area scale 1 on a square image
(torchvision falls back to the whole image, so a training crop is the image or its mirror)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mpbench.config import DatasetConfig
from mpbench.data import StreamLoader, load_dataset

from test_streaming import CLASSES, batches, loader_for, write_folder

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def pixels(x: torch.Tensor) -> torch.Tensor:
    """Normalised float batches back to 0..255."""
    m, s = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return (x * s + m) * 255


def square_folder(root: Path, n_train: int = 8) -> Path:
    return write_folder(root, n_train=n_train, size=(16, 16))


def pil_rgb(path: str) -> torch.Tensor:
    with Image.open(path) as img:
        return torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1).float()


def test_eval_batches_are_the_files_as_pil_decodes_them(tmp_path):
    root = square_folder(tmp_path / "sq")
    data = load_dataset(DatasetConfig(name="imagefolder", root=str(root), loader="stream",
                                      crop_size=16).model_dump())
    # crop_pct 1 at the images' own size: resize and centre crop leave them as decoded
    ld = StreamLoader(data.test_files, data.test_y, 4, train=False, size=16, crop_pct=1.0,
                      mean=MEAN, std=STD, num_workers=0, decode="device")
    got = [(x.clone(), y.clone()) for x, y in ld]
    x = torch.cat([b[0] for b in got])
    assert x.shape == (len(data.test_files), 3, 16, 16) and x.dtype == torch.float32
    assert torch.equal(torch.cat([b[1] for b in got]), data.test_y)
    ref = torch.stack([pil_rgb(f) for f in data.test_files])
    diff = (pixels(x) - ref).abs()
    # the same libjpeg-turbo IDCT in both, up to upsampling of the chroma: within 2 levels
    assert diff.max() <= 2.5 and diff.mean() < 0.5, (diff.max(), diff.mean())


def test_training_crops_at_area_one_are_the_image_or_its_mirror(tmp_path):
    root = square_folder(tmp_path / "sq", n_train=8)
    data = load_dataset(DatasetConfig(name="imagefolder", root=str(root), loader="stream",
                                      crop_size=16).model_dump())
    ld = StreamLoader(data.train_files, data.train_y, 32, train=True, size=16, scale_min=1.0,
                      mean=MEAN, std=STD, seed=1, num_workers=0, decode="device")
    ref = {f: pil_rgb(f) for f in data.train_files}  # as decoded by PIL (within 2 levels)
    flips = []
    for epoch in range(2):
        ld.set_epoch(epoch)
        order = [i for i, _ in ld.sampler]
        (x, y), = list(ld)
        for img, i in zip(pixels(x), order):
            r = ref[data.train_files[i]]
            same, mirror = (img - r).abs().max(), (img - r.flip(-1)).abs().max()
            assert min(same, mirror) <= 2.5 < max(same, mirror), (same, mirror)
            flips.append(bool(mirror < same))
        assert torch.equal(y, data.train_y[order])
    assert 0 < sum(flips) < len(flips)  # both happen (all 64 alike: p = 2**-63)


def test_device_decode_is_deterministic_and_independent_of_workers(tmp_path):
    root = write_folder(tmp_path / "t")
    data = load_dataset(DatasetConfig(name="imagefolder", root=str(root), loader="stream",
                                      crop_size=16).model_dump())
    one = batches(loader_for(data, decode="device"), 0)
    again = batches(loader_for(data, decode="device"), 0)
    two_workers = batches(loader_for(data, decode="device", num_workers=2), 0)
    other_epoch = batches(loader_for(data, decode="device"), 1)
    for a, b, c in zip(one, again, two_workers):
        assert torch.equal(a[0], b[0]) and torch.equal(a[0], c[0]) and torch.equal(a[1], c[1])
    assert not torch.equal(one[0][0], other_epoch[0][0])
    tail = batches(loader_for(data, decode="device"), 0, start=2)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(one[2:], tail))


def test_unreadable_and_non_jpeg_files(tmp_path):
    """What decode: cpu reads (PNG, 16-bit PNG, BMP, CMYK JPEG) is read; what it skips (a
    truncated JPEG, an empty file) is skipped and counted: the same batches' labels and the
    same skipped files as decode: cpu."""
    root = write_folder(tmp_path / "t", truncated=True)
    train = root / "train"

    def convert(path: Path, suffix: str, **save) -> None:
        with Image.open(path) as img:
            img = img.convert(save.pop("mode")) if "mode" in save else img
            img.save(path.with_suffix(suffix), **save)
        path.unlink()

    convert(train / CLASSES[2] / "0005.jpg", ".png")
    convert(train / CLASSES[3] / "0001.jpg", ".bmp")
    convert(train / CLASSES[0] / "0002.jpg", ".jpeg", mode="CMYK")
    with Image.open(train / CLASSES[0] / "0004.jpg") as img:  # 16 bits per sample
        grey = np.asarray(img.convert("L")).astype(np.uint16) * 257
    Image.fromarray(grey).save(train / CLASSES[0] / "0004.png")
    (train / CLASSES[0] / "0004.jpg").unlink()
    (train / CLASSES[1] / "0006.jpg").write_bytes(b"")
    data = load_dataset(DatasetConfig(name="imagefolder", root=str(root), loader="stream",
                                      crop_size=16).model_dump())
    cpu, dev = loader_for(data), loader_for(data, decode="device")
    before = torch.get_rng_state()
    got_cpu, got_dev = batches(cpu, 0), batches(dev, 0)
    assert torch.equal(torch.get_rng_state(), before)
    assert sum(len(y) for _, y in got_dev) == 30 and dev.epoch_skipped == 2
    assert sorted(dev.skipped_files) == sorted(cpu.skipped_files) == sorted(
        [str(train / "bee" / "0003.jpg"), str(train / "bee" / "0006.jpg")])
    assert [y.tolist() for _, y in got_dev] == [y.tolist() for _, y in got_cpu]


def test_batches_without_any_jpeg(tmp_path):
    """A PNG-only folder trains; a batch that no decoder can read is the loader's one-line
    error naming its first file, as with decode: cpu."""
    from mpbench.data import DataError

    root = write_folder(tmp_path / "t")
    for f in sorted(root.rglob("*.jpg")):
        with Image.open(f) as img:
            img.save(f.with_suffix(".png"))
        f.unlink()
    data = load_dataset(DatasetConfig(name="imagefolder", root=str(root), loader="stream",
                                      crop_size=16).model_dump())
    assert sum(len(y) for _, y in batches(loader_for(data, decode="device"), 0)) == 32
    for f in data.train_files:
        Path(f).write_bytes(b"not an image")
    for decode in ("cpu", "device"):
        with pytest.raises(DataError, match="no image of a whole batch could be read"):
            batches(loader_for(data, decode=decode), 0)


def test_a_suite_trains_with_device_decode_and_fingerprints_it(tmp_path):
    from mpbench.cli import main

    root = write_folder(tmp_path / "imgs")
    text = (f"name: s\ndataset: {{name: imagefolder, root: {root}, loader: stream, "
            f"crop_size: 16, num_workers: 0, decode: device}}\n"
            f"recipe: {{epochs: 1, batch_size: 8, eval_batch_size: 8}}\n"
            f"models: [{{name: cifar_resnet_tiny, match: false, args: {{width: 4}}}}]\n")
    suite = tmp_path / "s.yaml"
    suite.write_text(text)
    assert main(["run", str(suite), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    run = next((tmp_path / "o" / "runs").iterdir())
    (m,) = json.loads((run / "metrics.json").read_text())
    assert m["skipped_images"] == 0 and m["test_top1"] is not None
    assert json.loads((run / "config.json").read_text())["dataset"]["decode"] == "device"
    # the same output directory with decode: cpu is another experiment: refused
    suite.write_text(text.replace(", decode: device", ""))
    assert main(["run", str(suite), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "decode" not in DatasetConfig(name="imagefolder").model_dump()


def test_device_without_a_jpeg_decoder_is_one_line(monkeypatch):
    import torchvision.io

    from mpbench.data import DataError
    from mpbench.data.device_decode import check_device_decode

    def no_nvjpeg(*a, **kw):
        raise RuntimeError("Not compiled with GPU support\nmore")

    monkeypatch.setattr(torchvision.io, "decode_jpeg", no_nvjpeg)
    with pytest.raises(DataError, match=r"^dataset.decode: device: torchvision cannot decode "
                                        r"JPEGs on cuda \(Not compiled with GPU support\); "
                                        r"use decode: cpu$"):
        check_device_decode(torch.device("cuda"))


def test_non_jpeg_and_cmyk_pixels_are_the_files_as_pil_decodes_them(tmp_path):
    """PNG, BMP, a CMYK JPEG and a 16-bit greyscale PNG read through decode: device are the
    pixels PIL gives (RGB), not only the right labels; the 16-bit file (8-bit grey x 257) must
    read as its 8-bit grey in all three channels."""
    root = square_folder(tmp_path / "sq")
    files = sorted((root / "train").rglob("*.jpg"))[:4]
    png, bmp, cmyk, deep = (files[0].with_suffix(".png"), files[1].with_suffix(".bmp"),
                            files[2].with_suffix(".jpeg"), files[3].with_suffix(".png"))
    with Image.open(files[0]) as img:
        img.save(png)
    with Image.open(files[1]) as img:
        img.save(bmp)
    with Image.open(files[2]) as img:
        img.convert("CMYK").save(cmyk)
    with Image.open(files[3]) as img:
        grey = np.asarray(img.convert("L"))
    Image.fromarray(grey.astype(np.uint16) * 257).save(deep)
    paths = [str(p) for p in (png, bmp, cmyk, deep)]
    ld = StreamLoader(paths, torch.arange(4), 4, train=False, size=16, crop_pct=1.0,
                      mean=MEAN, std=STD, num_workers=0, decode="device")
    (x, y), = list(ld)
    assert y.tolist() == [0, 1, 2, 3]
    ref = torch.stack([pil_rgb(p) for p in paths[:3]]
                      + [torch.from_numpy(grey).float().expand(3, -1, -1)])
    diff = (pixels(x) - ref).abs().amax(dim=(1, 2, 3))
    # lossless files exactly (up to float normalisation); the CMYK JPEG within 2 levels
    assert diff[[0, 1, 3]].max() <= 0.01 and diff[2] <= 2.5, diff


@pytest.mark.parametrize("decode", ["device", "cpu"])
def test_16_bit_png_is_scaled_by_its_high_byte_not_wrapped(tmp_path, decode):
    """A 16-bit greyscale PNG whose values are not g x 257: each value v = 256 g + r, with the
    low byte r = g + 128 (mod 256) far from the high byte g, must read as v scaled to 0..255
    (v * 255 / 65535, within one level: torchvision's integer scaling keeps the high byte),
    in all three channels, by either decoder. A plain cast (v mod 256 = r) is off by about
    128 levels; g x 257 cannot tell the two apart, since 257 g mod 256 = g. PIL's own
    ``convert("RGB")`` clips at 255 (white): the CPU path must not use it as it is."""
    g = np.arange(256, dtype=np.uint16).reshape(16, 16)
    v = g * 256 + (g + 128) % 256
    path = tmp_path / "deep.png"
    Image.fromarray(v).save(path)
    with Image.open(path) as img:
        assert img.mode == "I;16"                      # really stored with 16 bits a sample
    ld = StreamLoader([str(path)], torch.zeros(1, dtype=torch.int64), 1, train=False, size=16,
                      crop_pct=1.0, mean=MEAN, std=STD, num_workers=0, decode=decode)
    (x, _), = list(ld)
    want = torch.from_numpy(v.astype(np.float64) * 255 / 65535).float().expand(3, -1, -1)
    assert (pixels(x)[0] - want).abs().max() <= 1.01
