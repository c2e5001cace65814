"""The HTTP layer: FastAPI routes, problem responses, the verification path and the guard.

May import: `adapters`, `projections`, `domain`. Never `keyledger` (the composition root hands
it a `api.context.Services`) or `scripts`. `api.guard` imports no route (checked by `lint-imports`).
"""
