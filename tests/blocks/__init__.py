"""Tests of ``prefect_scenario.blocks``: the ScenarioCredentials block."""
