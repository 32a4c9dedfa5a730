"""Optuna studies: study files, search spaces, samplers/pruners, workers, crash recovery and reports.

A study file (``studies/NAME.yaml``) is read into a :class:`~dlsuite.hpo.spec.StudySpec`; one trial is
one run config trained by a :class:`~dlsuite.hpo.runner.TrialRunner`; workers share one Optuna storage
(a journal file by default) and one MLflow parent run. See ``docs/studies.md``.
"""
