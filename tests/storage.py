"""Reads every stored row of a test's database as raw bytes, whatever the backend."""

from __future__ import annotations

import sqlite3

import psycopg
from psycopg import sql

from keyledger.settings import Settings
from tests.backends import POSTGRES_URL


def _cell_bytes(value: object) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


def dump_rows(settings: Settings) -> dict[str, list[bytes]]:
    """Every row of every table, each row's cells joined, keyed by table name."""
    dump: dict[str, list[bytes]] = {}
    if settings.is_postgres:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            tables = [
                r[0]
                for r in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                    (settings.database_schema,),
                )
            ]
            for table in tables:
                query = sql.SQL("SELECT * FROM {}.{}").format(
                    sql.Identifier(settings.database_schema or "public"), sql.Identifier(table)
                )
                dump[table] = [b"|".join(map(_cell_bytes, row)) for row in conn.execute(query)]
        return dump
    conn = sqlite3.connect(settings.url.database or "")
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            rows = conn.execute(f'SELECT * FROM "{table}"')
            dump[table] = [b"|".join(map(_cell_bytes, row)) for row in rows]
    finally:
        conn.close()
    return dump
