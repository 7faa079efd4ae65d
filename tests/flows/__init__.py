"""Tests of ``prefect_scenario.flows`` against the live emulator and the session's Prefect test server."""
