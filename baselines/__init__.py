"""Comparison models, registered through the same registry users add their own models to.

Installed as ``mpbench.baselines`` (see pyproject.toml for why not top-level ``baselines``).
"""
from . import resnet  # noqa: F401
