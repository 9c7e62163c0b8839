"""PostgreSQL for the tests: the server on 127.0.0.1:5432 (started here if it is installed
but stopped; a failure to start fails the test loudly), and a database of this run's own.

`postgres_url` (session) is a fresh database `asya_test_<random>`, dropped at the end, so
runs never see each other's rows; tests isolate themselves further with a schema each
(`fresh_schema`). Trust auth, user postgres, as on our machines and CI.
"""

from __future__ import annotations

import asyncio
import glob
import os
import subprocess
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

from tests.support.services import port_open
from tests.support.waiting import wait_until

__all__ = [
    "ADMIN_URL",
    "drop_schema",
    "ensure_postgres",
    "fresh_schema",
    "own_database",
    "postgres_url",
    "with_search_path",
]

HOST, PORT = "127.0.0.1", 5432
ADMIN_URL = f"postgresql://postgres@{HOST}:{PORT}/postgres"
START_DEADLINE_S = 60.0


def ensure_postgres() -> None:
    """PostgreSQL answers on 127.0.0.1:5432, or the test fails saying why."""
    if port_open(PORT, host=HOST):
        return
    clusters = sorted(os.path.basename(path) for path in glob.glob("/etc/postgresql/*"))
    if not clusters:
        pytest.fail(
            f"PostgreSQL is not running on {HOST}:{PORT} and no cluster is installed "
            "(/etc/postgresql is empty); install it (Debian: postgresql) or start it"
        )
    version = clusters[-1]
    started = subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
        capture_output=True,
        text=True,
        timeout=START_DEADLINE_S,
        check=False,
    )
    try:
        wait_until(
            lambda: port_open(PORT, host=HOST),
            what=f"PostgreSQL {version}, started here, to answer on {HOST}:{PORT}",
            timeout=START_DEADLINE_S,
            interval=0.2,
        )
    except AssertionError as exc:
        pytest.fail(
            f"{exc}\npg_ctlcluster {version} main start exited {started.returncode}:\n"
            f"{started.stdout}{started.stderr}"
        )


async def _admin(*statements: str, url: str = ADMIN_URL) -> None:
    conn = await asyncpg.connect(url, timeout=30)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def with_search_path(url: str, schema: str) -> str:
    """`url` with PostgreSQL's search_path set to `schema` (asyncpg passes query parameters
    it does not know to the server as settings)."""
    return f"{url}{'&' if '?' in url else '?'}search_path={schema}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    ensure_postgres()
    name = f"asya_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"cannot create the test database {name} through {ADMIN_URL}: {exc}")
    yield f"postgresql://postgres@{HOST}:{PORT}/{name}"
    # FORCE: a store a failed test left open must not keep the database alive.
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def own_database() -> Iterator[str]:
    """A database of the test's own (stores that name their tables plainly, such as
    x-join's, get no schema of their own); its URL. Dropped after the test."""
    ensure_postgres()
    name = f"asya_own_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    yield f"postgresql://postgres@{HOST}:{PORT}/{name}"
    # FORCE: a pool a failed test left open must not keep the database alive.
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def fresh_schema(database_url: str) -> tuple[str, str]:
    """Create an empty schema in the database; return its name and a URL whose
    search_path is that schema."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    await _admin(f'CREATE SCHEMA "{schema}"', url=database_url)
    return schema, with_search_path(database_url, schema)


async def drop_schema(database_url: str, schema: str) -> None:
    await _admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE', url=database_url)
