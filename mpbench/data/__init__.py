"""Data: data sets decoded into uint8 tensors (datasets), the device-resident batch loader
(loader) and image folders read by DataLoader workers (streaming). Layer 2: imports the leaves (config, errors) only."""
from mpbench.data.datasets import (DataError, Dataset, cache_dir, channel_stats, default_root,
                                   load_cifar, load_dataset, load_image_folder, normalize,
                                   read_cifar10, read_cifar100, synthetic)
from mpbench.data.loader import BatchLoader
# image folders may stream (dataset.loader): this load_dataset dispatches, the in-memory one is
# mpbench.data.datasets.load_dataset
from mpbench.data.streaming import StreamingDataset, StreamLoader, load_dataset  # noqa: F811

__all__ = ["DataError", "Dataset", "cache_dir", "channel_stats", "default_root", "load_cifar",
           "load_dataset", "load_image_folder", "normalize", "read_cifar10", "read_cifar100",
           "synthetic", "BatchLoader", "StreamingDataset", "StreamLoader"]
