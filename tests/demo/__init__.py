"""Tests of ``prefect_scenario.demo``."""
