"""Tests of ``prefect_scenario.concurrency``: slot pools and slot leases of global concurrency limits."""
