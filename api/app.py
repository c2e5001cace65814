"""The FastAPI application: routes, problem handlers, and the services' lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import openapi, problems
from api.context import Services
from api.routes import (
    audit,
    audit_log,
    dashboard,
    insights,
    keys,
    me,
    ops,
    stream,
    usage,
    verify,
    webhooks,
    workspaces,
)


def create_app(services: Services) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        services.start()
        try:
            yield
        finally:
            services.stop()

    app = FastAPI(
        title="keyledger",
        version="1",
        description="Event-sourced API-key lifecycle: issue, scope, rotate, revoke, verify, meter, audit.",
        lifespan=lifespan,
    )
    app.state.services = services
    problems.install(app)
    openapi.install(app, lambda: services.ledger.catalog)
    # The verification routes come first: routing tries routes in order, and they are the hot path.
    for module in (verify, workspaces, keys, usage, insights, audit, audit_log, stream, webhooks, me, ops, dashboard):
        app.include_router(module.router)
    return app
