"""Training techniques below the tasks: optimisers and schedules, losses, regularisers and mixing,
ensembles, diagnostics, speed settings, and the Lightning callbacks a config switches on."""
