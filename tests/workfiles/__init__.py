"""Tests of ``prefect_scenario.workfiles``: what a killed process leaves behind."""
