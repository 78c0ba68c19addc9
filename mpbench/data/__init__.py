"""Data: data sets decoded into uint8 tensors (datasets) and the device-resident batch loader
(loader). Layer 2: imports the leaves (config, errors) only."""
from mpbench.data.datasets import (DataError, Dataset, cache_dir, channel_stats, default_root,
                                   load_cifar, load_dataset, load_image_folder, normalize,
                                   read_cifar10, read_cifar100, synthetic)
from mpbench.data.loader import BatchLoader

__all__ = ["DataError", "Dataset", "cache_dir", "channel_stats", "default_root", "load_cifar",
           "load_dataset", "load_image_folder", "normalize", "read_cifar10", "read_cifar100",
           "synthetic", "BatchLoader"]
