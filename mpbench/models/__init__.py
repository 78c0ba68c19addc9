"""mpbench's own model families: the multi-path networks under test."""
from . import mp_resnet  # noqa: F401  (registers the mp_resnet family)
from . import mp_resnet_imagenet  # noqa: F401  (registers mp_resnet_imagenet)
