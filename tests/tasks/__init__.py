"""Tests of ``prefect_scenario.tasks``, one module per task module."""
