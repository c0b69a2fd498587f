"""The sample shop as a plain ASGI app, for uvicorn: ``uvicorn asgi:app --workers 2``.

The agent starts in the ASGI lifespan startup, which runs in every worker process (uvicorn
spawns its workers), so each worker has its own agent; FastAPI/Starlette apps do the same
in their ``lifespan`` handler. ``loop=`` makes every reload run on the server's event loop,
between two steps of the coroutines, so no request handler ever sees a half-swapped module.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pricing

import reloadctl.agent
from reloadctl.errors import ReloadctlError

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /`` answers ``pid <pid> | <pricing.describe()>``; lifespan starts the agent."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    reloadctl.agent.start(loop=asyncio.get_running_loop())
                except ReloadctlError:
                    # Serve without live reload rather than not at all.
                    logging.getLogger(__name__).exception("reloadctl agent not started")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = f"pid {os.getpid()} | {pricing.describe()}\n".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
