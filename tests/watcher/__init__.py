"""Tests of ``prefect_scenario.watcher``: what a sweep costs and what it still finds."""
