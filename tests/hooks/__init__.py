"""Tests of ``prefect_scenario.hooks``."""
