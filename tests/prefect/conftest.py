"""The Prefect-side tests all run against the session's Prefect test server (``tests/conftest.py``)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _prefect_server(prefect_harness: None) -> None:
    """Every test here runs against the session's Prefect test server."""
