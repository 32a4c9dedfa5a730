"""``python -m dlsuite`` runs the CLI (DDP's launcher re-runs the command this way)."""

from dlsuite.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
