"""The sample shop as a WSGI app, for gunicorn: ``gunicorn -c gunicorn_conf.py wsgi:app``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import pricing

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """``GET /`` answers ``pid <pid> | <pricing.describe()>``."""
    body = f"pid {os.getpid()} | {pricing.describe()}\n".encode()
    start_response(
        "200 OK",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]
