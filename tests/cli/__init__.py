"""Tests of ``prefect_scenario.cli`` that need no Prefect server (the runs that do are in ``tests/flows``)."""
