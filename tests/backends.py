"""Which real backends the suites run against, and what to do when one is missing.

On a developer machine a missing PostgreSQL or Redis skips its tests with the
reason; in CI (CI=true) it fails them, so a green CI always exercised both.
"""

from __future__ import annotations

import functools
import os
from uuid import uuid4

import psycopg
import pytest
from psycopg import sql

POSTGRES_URL = os.environ.get("KEYLEDGER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("KEYLEDGER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(name: str, problem: str | None) -> None:
    if problem is None:
        return
    if IN_CI:
        pytest.fail(f"{name} is required in CI but unavailable: {problem}", pytrace=False)
    pytest.skip(f"{name} unavailable ({problem}); start it as DEVELOPERS.md shows")


def _pg_connect() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(POSTGRES_URL, connect_timeout=3, autocommit=True)


@functools.cache
def postgres_problem() -> str | None:
    try:
        with _pg_connect() as conn:
            conn.execute("SELECT 1")
    except Exception as error:  # any failure means: not usable here
        return f"{POSTGRES_URL}: {type(error).__name__}: {str(error).strip()[:200]}"
    return None


@functools.cache
def redis_problem() -> str | None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as error:
        return f"{REDIS_URL}: {type(error).__name__}: {error}"
    return None


def new_pg_schema() -> str:
    schema = f"t_{uuid4().hex[:16]}"
    with _pg_connect() as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    return schema


def drop_pg_schema(schema: str) -> None:
    with _pg_connect() as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
