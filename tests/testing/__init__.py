"""Tests of ``prefect_scenario.testing``: the pytest plugin."""
