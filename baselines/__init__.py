"""Comparison models, registered through the same registry users add their own models to.

Installed as ``mpbench.baselines`` (see pyproject.toml for why not top-level ``baselines``).
One module per family, as in timm:

- ``resnet``: deeper (CIFAR ResNet-20..110, families ``resnet``/``resnet4``)
- ``wrn``: wider (WRN-d-k, pre-activation with dropout; family ``wrn``)
- ``resnext``: grouped paths without routing (ResNeXt-29; family ``resnext``)
- ``se_resnet``, ``sknet``, ``resnest``, ``res2net``: adaptive feature extraction
- ``ensemble``: N independently trained members averaged at test time (family ``ensemble``)
"""
from . import resnet  # noqa: F401
from . import wrn  # noqa: F401
from . import resnext  # noqa: F401
from . import se_resnet  # noqa: F401
from . import sknet  # noqa: F401
from . import resnest  # noqa: F401
from . import res2net  # noqa: F401
from . import ensemble  # noqa: F401
from . import timm_imagenet  # noqa: F401
