"""mpbench: multi-path CNNs with feature-dependent cross-connections vs. baselines at matched MACs.

Importing the package registers the built-in models (``models`` and ``baselines`` import the
registry, a leaf, and register themselves by decorator), as ``import timm`` does for timm's.
The layers and what each may import: docs/architecture.md.
"""
__version__ = "0.1.0"

from mpbench.registry import Knob, create_model, list_models, register_model  # noqa: E402
from mpbench import models, baselines  # noqa: E402,F401  (registers the built-in models)

__all__ = ["Knob", "create_model", "list_models", "register_model", "__version__"]
