"""Training: the trainer loop (knows nothing of fine-tuning), its callbacks, initialisation
from weights (fine-tuning, upcycling), devices and DDP. Layer 3: imports data, complexity,
models, baselines and the leaves."""
