"""Comparisons as results: statistics over seeds, the comparison report, and the run doctor.

- :mod:`dlsuite.reports.stats`: mean / confidence interval, paired tests against a baseline, ranking.
- :mod:`dlsuite.reports.comparison`: the table and plots of a compare study, read back from MLflow.
- :mod:`dlsuite.reports.doctor`: over- or underfitting diagnosis of one run, and a study of remedies.
"""
