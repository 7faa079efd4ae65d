"""Tests of ``prefect_scenario.storage``."""
