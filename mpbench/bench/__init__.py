"""Bench: training and inference throughput, MFU and the input pipeline's share, measured the
same way for ``mpbench bench`` and for every run's speed record. Layer 4: imports training,
data, complexity and the leaves."""
from mpbench.bench.throughput import (BenchResult, MatmulPeak, ModelSpec, TrainStep, bench_model,
                                      bench_models, machine_info, matmul_peak, parse_model_spec,
                                      profile_train_step, run_speed)

__all__ = ["ModelSpec", "BenchResult", "matmul_peak", "bench_models", "bench_model",
           "machine_info", "parse_model_spec", "TrainStep", "MatmulPeak", "profile_train_step",
           "run_speed"]
