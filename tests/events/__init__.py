"""Tests of ``prefect_scenario.events`` and what a run leaves behind: events, artifacts, logs, results."""
