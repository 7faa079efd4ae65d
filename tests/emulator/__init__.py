"""Tests of the Scenario API emulator (``prefect_scenario.emulator``)."""
