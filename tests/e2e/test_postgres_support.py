"""The suite's PostgreSQL (``bench/_postgres.py``): a real server, and nothing of it left afterwards."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncpg

from bench._postgres import postgres_database


def test_a_postgres_database_serves_sql_and_leaves_no_process_or_files() -> None:
    with postgres_database("scratch") as url:
        socket_dir = Path(url.rpartition("host=")[2])
        postmaster = int((socket_dir / "postmaster.pid").read_text().splitlines()[0])

        async def query() -> tuple[str, bool]:
            connection = await asyncpg.connect(host=str(socket_dir), user="postgres", database="scratch")
            try:
                version = await connection.fetchval("SHOW server_version")
                # Prefect's first migration needs it; plain pgserver's wheel does not ship it.
                await connection.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
                trgm = await connection.fetchval(
                    "SELECT count(*) = 1 FROM pg_extension WHERE extname = 'pg_trgm'"
                )
            finally:
                await connection.close()
            return str(version), bool(trgm)

        version, trgm = asyncio.run(query())
        assert url.startswith("postgresql+asyncpg://postgres@/scratch?host=")
        assert version.split(".")[0].isdigit()
        assert trgm
    try:
        os.kill(postmaster, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive, f"PostgreSQL (pid {postmaster}) outlived its block"
    assert not socket_dir.exists()
    assert not Path(f"/tmp/runtime-{os.getuid()}").exists(), "pgserver's lock folder went to /tmp"
