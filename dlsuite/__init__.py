"""dlsuite: a PyTorch Lightning experiment suite with MLflow tracking and Optuna studies."""

__version__ = "0.1.0"
