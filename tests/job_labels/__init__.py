"""Tests of ``prefect_scenario.job_labels``."""
