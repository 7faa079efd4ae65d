"""A real PostgreSQL server for the e2e suite and the bench: ``prefect_scenario.postgres``, with the
suite's lock folder.

The implementation lives in the package (``prefect_scenario/postgres.py``), which
``prefect-scenario server start`` uses too, so the suite, the bench and users run one PostgreSQL
recipe. What stays here is the one thing that belongs to a test session: pgserver's lock folder goes
into the session's temporary folder (``PREFECT_SCENARIO_TEST_DIR``, set by ``tests/conftest.py``),
never to ``/tmp/runtime-<uid>``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from prefect_scenario import postgres


@contextlib.contextmanager
def postgres_database(name: str = "prefect") -> Iterator[str]:
    """A fresh PostgreSQL server holding database ``name``; yields the SQLAlchemy URL for Prefect.

    Example:
        >>> with postgres_database() as url:  # doctest: +SKIP
        ...     env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = url
    """
    # pgserver fixes its lock folder when first imported: one folder for the whole test session.
    runtime = Path(os.environ.get("PREFECT_SCENARIO_TEST_DIR", tempfile.gettempdir())) / "pg-runtime"
    with postgres.postgres_database(name, runtime_dir=runtime) as url:
        yield url
