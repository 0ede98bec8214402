"""Evaluation: metrics, bootstrap confidence intervals, slices, system scoring and reports."""
