"""Adapters: keyledger's connections to the outside world, in one place.

The read side's database: engine and transactions (`database`), column types and bulk inserts (`rows`), used
by the read models, the webhooks' delivery state and the operator token. The event store's recorders with the
audit chain (`auditchain`), the change feed between processes (`change_feed`, in process or Redis), the
credential cache (`credential_cache`), quota counters (`quotas`, in process or Redis through `limits`) and the
usage recorder (`usage_recorder`).

May import: `domain` and third-party libraries. Never `projections`, `api`, `keyledger` or
`scripts` (checked by `lint-imports`); the composition root (`keyledger`) wires them.
"""
