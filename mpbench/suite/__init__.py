"""Suite: planning (matching every model to every budget before anything is written), the
runner (locks, resumes, results.csv) and launchers (SLURM). Layer 5: imports training, bench,
data, complexity, models and the leaves; never report or cli."""
