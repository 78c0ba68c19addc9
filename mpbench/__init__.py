"""mpbench: multi-path CNNs with feature-dependent cross-connections vs. baselines at matched MACs."""
from mpbench.registry import Knob, create_model, list_models, register_model

__version__ = "0.1.0"
__all__ = ["Knob", "create_model", "list_models", "register_model", "__version__"]
