"""The domain: aggregates, their events and rules, and the KeyLedger application service.

May import: the standard library and `eventsourcing` only (no SQLAlchemy, FastAPI, Redis,
psycopg or pydantic: checked by `lint-imports`).
"""
