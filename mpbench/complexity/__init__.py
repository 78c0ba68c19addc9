"""Complexity: MACs and parameters by fvcore's convention (counting), and the search that puts
a model on a budget (matching). Layer 2: imports the leaves (registry, config, errors) only.

``mpbench.complexity.register_op_handle`` and friends stay importable from here.
"""
from mpbench.complexity.counting import (MATMUL_OPS, Complexity, UnsupportedOpError, cache_generation,
                                         clear_cache, count, count_model, estimate_model,
                                         format_macs, format_params, freeze, model_args,
                                         register_op_handle)
from mpbench.complexity.matching import (BudgetError, Match, describe, match_budget, match_suite,
                                         suite_geometry)

__all__ = [
    "Complexity", "UnsupportedOpError", "count", "count_model", "estimate_model", "model_args",
    "register_op_handle", "freeze", "clear_cache", "cache_generation", "format_macs",
    "format_params", "MATMUL_OPS", "Match", "BudgetError", "match_budget", "describe",
    "match_suite", "suite_geometry",
]
