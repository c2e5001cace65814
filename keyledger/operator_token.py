"""The operator token: configured, or generated once on first start and printed once.

Only its digest is stored (table `kl_operator`), so a restart keeps the token
that was printed, and several processes on one database agree on it.
"""

from __future__ import annotations

import secrets

from sqlalchemy import Column, Engine, MetaData, String, Table, insert, select
from sqlalchemy.exc import IntegrityError

from adapters.database import lock_for_ddl
from domain import credentials

metadata = MetaData()
operator_table = Table(
    "kl_operator",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("token_digest", String(64), nullable=False),
)


def ensure_operator_token(engine: Engine, configured: str | None) -> tuple[str, str | None]:
    """The digest to check operator requests against, and a newly generated token to print (or None)."""
    if configured:
        return credentials.digest(configured), None
    with engine.begin() as conn:
        lock_for_ddl(conn)  # two processes starting at once must not race to create the table
        metadata.create_all(conn)
    with engine.begin() as conn:
        stored = conn.execute(select(operator_table.c.token_digest)).scalar_one_or_none()
    if stored is not None:
        return stored, None
    token = "klop_" + secrets.token_urlsafe(32)
    try:
        with engine.begin() as conn:
            conn.execute(insert(operator_table).values(id="operator", token_digest=credentials.digest(token)))
    except IntegrityError:  # another process generated one first: use theirs, print nothing
        with engine.begin() as conn:
            return conn.execute(select(operator_table.c.token_digest)).scalar_one(), None
    return credentials.digest(token), token
