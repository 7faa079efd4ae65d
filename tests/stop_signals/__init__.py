"""Tests of ``prefect_scenario.stop_signals``: stop signals unwinding the stack."""
