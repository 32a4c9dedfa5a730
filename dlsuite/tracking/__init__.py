"""MLflow tracking: the store, the run lifecycle, the epoch logger and the figures."""
