"""The raw ASGI baseline of `bench_verify`: reads the same body, parses it, answers the same JSON shape.

No framework and no decision: the ratio against it shows what keyledger's hot path adds to the cost of
reading a request and writing an answer at the ASGI layer (same server, uvicorn, same log settings).
"""

from __future__ import annotations

from typing import Any

import msgspec

_decode = msgspec.json.decode
_encode = msgspec.json.encode


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    request = _decode(body) if body else {}
    answer = {
        "valid": True,
        "code": "VALID",
        "key_id": None,
        "workspace_id": None,
        "scopes": [request.get("scope")],
        "ratelimit": {"limit": 1, "remaining": 1, "reset": 1},
        "name": None,
        "owner_id": None,
        "meta": None,
        "credits": None,
    }
    content = _encode(answer)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": content})
