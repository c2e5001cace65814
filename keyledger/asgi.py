"""The ASGI application built from the environment: what each `keyledger serve --workers N` process runs."""

from __future__ import annotations

from fastapi import FastAPI

from api.app import create_app
from keyledger.services import build_services
from keyledger.settings import Settings


def create() -> FastAPI:
    return create_app(build_services(Settings()), freeze_gc=True)
