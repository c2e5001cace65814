"""The FastAPI application: routes, problem handlers, and the services' lifetime."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from api import openapi, problems
from api.context import Services
from api.hotpath import HotPath
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


class KeyledgerApp(FastAPI):
    """FastAPI with the hot routes answered ahead of its routing (`api.hotpath`); the rest goes through it."""

    hot: HotPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = self.hot
        if hot is not None and scope["type"] == "http":
            handler = hot.handles(scope)
            if handler is not None:
                await handler(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(services: Services, hot_path: bool = True, freeze_gc: bool = False) -> KeyledgerApp:
    """The API; `hot_path=False` answers the hot routes through FastAPI alone (as a reference in tests).
    `freeze_gc`: for a server process (`keyledger serve`), which runs one app for its lifetime."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        services.start()
        if freeze_gc:
            # What start-up made (modules, schemas, cached keys) lives as long as the process: frozen out of the
            # cyclic collector's sight, full collections under load no longer stall requests for tens of ms.
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            services.stop()

    app = KeyledgerApp(
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
    if hot_path:
        app.hot = HotPath(services, super(KeyledgerApp, app).__call__)
    return app
