"""Decoding on the training device (``dataset.decode: device``) for streamed image folders.

With ``decode: cpu`` (the default) the DataLoader workers decode and transform every image
(:mod:`mpbench.data.streaming`). On a GPU node with few CPU cores per GPU that is the
bottleneck of an ImageNet epoch, so ``decode: device`` moves it: the workers only read the
files' bytes, and the main process decodes each batch on the run's device with
``torchvision.io.decode_jpeg`` (nvJPEG on CUDA, in one batched call; libjpeg-turbo on CPU,
which is how the tests exercise this path), then applies torchvision's transforms v2 on the
decoded tensors: RandomResizedCrop (bilinear, antialiased) and a horizontal flip for
training, resize to ``size / crop_pct`` and a centre crop for evaluation, the same geometry
as timm's transforms of the CPU pipeline. Files that are not JPEGs (PNG, BMP, ...), JPEGs
without their end marker (possibly truncated: a hardware decoder may not notice) and JPEGs
the device decoder refuses (nvJPEG rejects CMYK) are decoded on the CPU (torchvision, else
PIL, as the CPU pipeline reads them) and moved to the device.

Determinism is the CPU pipeline's: every image's crop and flip are drawn from its own
augmentation seed (the sampler's), in a fork of the CPU RNG (torchvision draws transform
parameters on the CPU), so the batches do not depend on the worker count and a resumed epoch
is the tail of the uninterrupted one. Only the CPU generator is seeded (the CUDA one, which
dropout in the training step draws from, is left alone). The batches are not those of
``decode: cpu``: timm's crops draw from Python's RNG and these from torch's, and the decoder
and resampler differ, so ``decode`` is part of the run fingerprint and never chosen
automatically: a suite gives the same numbers on every machine unless it asks otherwise.

An unreadable file is skipped and counted as with ``decode: cpu``: a batch whose batched
decode fails is decoded image by image, and what no decoder reads is the bad file.
``decode: device`` is used only where it works: on CUDA it needs torchvision's nvJPEG decoder
(in the standard CUDA wheels), checked once when the loader is built, else a DataError says
what is missing.
torchvision 0.29 marks its decoders deprecated in favour of TorchCodec; they are still the
only decoder shipped with torch, so they are used here.
"""
from __future__ import annotations

import contextlib
import io
import math
import warnings

import torch

from mpbench.data.datasets import DataError, to_rgb

JPEG_MAGIC = b"\xff\xd8"
JPEG_END = b"\xff\xd9"  # the end-of-image marker, which a truncated file lacks
JPEG_END_WINDOW = 64  # some writers append a few bytes after it; more go to the CPU


class EncodedFiles(torch.utils.data.Dataset):
    """One file's bytes (the workers do I/O only); an unreadable file comes back as its path."""

    def __init__(self, files: list[str], labels: torch.Tensor):
        self.files, self.labels = files, labels.tolist()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item):
        index, aug_seed = item if isinstance(item, tuple) else (item, 0)
        path = self.files[index]
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return path
        if not data:  # an empty file
            return path
        # plain bytes, pickled through the worker's pipe: a tensor per image would cost a
        # shared-memory file descriptor each, and a queued batch of 256 runs out of them
        return data, self.labels[index], aug_seed, path


def collate_encoded(samples: list) -> list:
    """A batch stays a list: the images are decoded on the device, not stacked here."""
    return samples


@contextlib.contextmanager
def _quiet_io():
    """torchvision 0.29's decoders warn that TorchCodec supersedes them (see the docstring)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*TorchCodec", category=DeprecationWarning)
        yield


def build_device_transform(size: int, *, train: bool, crop_pct: float = 0.875,
                           scale_min: float = 0.08):
    """torchvision v2 transforms on a uint8 CHW tensor, with timm's geometry (eval: the
    shorter side resized to ``floor(size / crop_pct)``, then a centre crop)."""
    from torchvision.transforms import InterpolationMode, v2

    bilinear = InterpolationMode.BILINEAR
    if train:
        return v2.Compose([v2.RandomResizedCrop(size, scale=(scale_min, 1.0),
                                                interpolation=bilinear, antialias=True),
                           v2.RandomHorizontalFlip(0.5)])
    return v2.Compose([v2.Resize(math.floor(size / crop_pct), interpolation=bilinear,
                                 antialias=True),
                       v2.CenterCrop(size)])


class DeviceDecoder:
    """Turns a batch of :class:`EncodedFiles` items into ``(uint8 images, labels, bad paths)``
    on ``device``; ``(None, None, bad)`` when no image of the batch could be read."""

    def __init__(self, size: int, *, train: bool, device: torch.device, crop_pct: float = 0.875,
                 scale_min: float = 0.08):
        self.device = torch.device(device)
        self.transform = build_device_transform(size, train=train, crop_pct=crop_pct,
                                                scale_min=scale_min)
        check_device_decode(self.device)

    def _decode(self, data: list[bytes]) -> list[torch.Tensor | None]:
        """Each file decoded to uint8 RGB on the device; None where nothing can read it.

        Complete baseline JPEGs go through one batched device call (nvJPEG's fast path; all
        or nothing, so a failing batch is retried image by image). A JPEG without its end
        marker (truncated: a hardware decoder may not notice), one the device decoder
        refuses (nvJPEG rejects CMYK), and any other format are decoded on the CPU, by
        torchvision and else PIL (BMP, 16-bit PNG), as the CPU pipeline reads them."""
        from torchvision.io import ImageReadMode, decode_jpeg

        out: list[torch.Tensor | None] = [None] * len(data)
        tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in data]
        jpegs = [i for i, d in enumerate(data)
                 if d[:2] == JPEG_MAGIC and JPEG_END in d[-JPEG_END_WINDOW:]]
        with _quiet_io():
            if jpegs:
                try:
                    for i, img in zip(jpegs, decode_jpeg([tensors[i] for i in jpegs],
                                                         mode=ImageReadMode.RGB,
                                                         device=self.device)):
                        out[i] = img
                except (RuntimeError, ValueError):
                    for i in jpegs:
                        try:
                            out[i] = decode_jpeg(tensors[i], mode=ImageReadMode.RGB,
                                                 device=self.device)
                        except (RuntimeError, ValueError):
                            out[i] = None
            for i in range(len(data)):
                if out[i] is None:
                    img = decode_on_cpu(data[i], tensors[i])
                    out[i] = None if img is None else img.to(self.device, non_blocking=True)
        return out

    def __call__(self, batch: list):
        bad = [s for s in batch if isinstance(s, str)]
        items = [s for s in batch if not isinstance(s, str)]
        images, labels = [], []
        for (_, label, seed, path), img in zip(items, self._decode([s[0] for s in items])):
            if img is None:
                bad.append(path)
                continue
            # the transforms draw on the CPU generator: seed only that one (torch.manual_seed
            # would reset the CUDA generator too, which dropout in the step draws from)
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(seed)
                images.append(self.transform(img))
            labels.append(label)
        if not images:
            return None, None, bad
        return (torch.stack(images), torch.tensor(labels, dtype=torch.int64, device=self.device),
                bad)


def decode_on_cpu(data: bytes, tensor: torch.Tensor) -> torch.Tensor | None:
    """uint8 RGB CHW on the CPU by torchvision's decoders, else PIL; None if neither can."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2.functional import to_dtype

    try:  # a 16-bit PNG comes back as uint16: scaled to 0..255
        return to_dtype(decode_image(tensor, mode=ImageReadMode.RGB), torch.uint8, scale=True)
    except (RuntimeError, ValueError):
        pass
    from PIL import Image
    try:
        with Image.open(io.BytesIO(data)) as pil:
            arr = torch.frombuffer(bytearray(to_rgb(pil).tobytes()), dtype=torch.uint8)
            return arr.view(pil.height, pil.width, 3).permute(2, 0, 1).contiguous()
    except (OSError, SyntaxError, ValueError):
        return None


def check_device_decode(device: torch.device) -> None:
    """A DataError unless torchvision can decode a JPEG on ``device`` (one tiny image)."""
    from torchvision.io import decode_jpeg, encode_jpeg

    with _quiet_io():
        try:
            probe = encode_jpeg(torch.zeros(3, 8, 8, dtype=torch.uint8))
            decode_jpeg(probe, device=device)
        except (RuntimeError, NotImplementedError) as exc:
            raise DataError(f"dataset.decode: device: torchvision cannot decode JPEGs on "
                            f"{device} ({str(exc).splitlines()[0]}); use decode: cpu") from None
