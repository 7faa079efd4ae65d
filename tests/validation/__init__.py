"""Tests of ``prefect_scenario.validation``."""
