"""`/dashboard`: the usage dashboard, a static page that reads the API with an admin key it keeps in the tab.

Nothing here knows a key: the page signs in by calling the API with the key an
admin pastes (held in `sessionStorage` only). The files are package data under
`api/static/dashboard`; only the names listed below are served, and every
answer forbids loading anything from another origin.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable

from fastapi import APIRouter, Response
from starlette.exceptions import HTTPException

router = APIRouter(include_in_schema=False)

STATIC: Traversable = files("api") / "static" / "dashboard"
ASSETS = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "chart.js": "text/javascript; charset=utf-8",
    "format.js": "text/javascript; charset=utf-8",
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def _file(name: str, media_type: str) -> Response:
    return Response((STATIC / name).read_bytes(), media_type=media_type, headers=HEADERS)


@router.get("/dashboard")
def dashboard() -> Response:
    return _file("index.html", "text/html; charset=utf-8")


@router.get("/dashboard/{asset}")
def dashboard_asset(asset: str) -> Response:
    media_type = ASSETS.get(asset)
    if media_type is None:
        raise HTTPException(404, "no such dashboard file")
    return _file(asset, media_type)
