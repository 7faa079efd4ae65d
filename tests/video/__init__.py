"""Tests of ``prefect_scenario.video``."""
