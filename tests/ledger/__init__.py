"""Tests of ``prefect_scenario.ledger``: the submission ledger."""
