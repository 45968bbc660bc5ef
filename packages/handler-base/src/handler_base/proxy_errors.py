"""Serve's own HTTP errors answered in the platform's error shape.

Our apps answer every failure as ``{"error": {"code", "message"}}``, but some answers are
written by Serve's HTTP proxy, in front of them, as plain text: a 503 when a deployment's
queue is full or it has no replica, a 404 for a path no app owns, a 408 past
``request_timeout_s``, and an empty 500 when the replica answering a request dies under it
(Serve sends nothing and uvicorn writes ``Internal Server Error``).

:class:`ErrorShapeMiddleware` wraps the proxy and rewrites those answers, keeping their
status and headers (``Retry-After`` included). Serve loads it in every proxy when the
proxy's process has ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` set to
:data:`PROXY_CALLBACK` (see :data:`handler_base.local_ray.LOCAL_RAY_ENV`); the proxy
process must be able to import ``handler_base``. A response the apps have begun (a stream
cut short by a dying replica) cannot be rewritten and just ends.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from starlette.middleware import Middleware

from handler_base.errors import ErrorReply, code_for_status

logger = logging.getLogger(__name__)

PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
"""Serve's hook: the import path of a function that returns the proxy's middlewares."""
PROXY_CALLBACK = "handler_base.proxy_errors:proxy_middlewares"
"""The value of :data:`PROXY_CALLBACK_ENV` that installs :class:`ErrorShapeMiddleware`."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_DROPPED_HEADERS = (b"content-type", b"content-length")


def proxy_middlewares() -> list[Middleware]:
    """What Serve's proxy calls (through :data:`PROXY_CALLBACK`) for its middlewares."""
    return [Middleware(ErrorShapeMiddleware)]


def shaped_error(
    status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> tuple[Message, Message]:
    """The ASGI start and body messages of an error-shape answer with ``status``."""
    body = json.dumps(ErrorReply.of(code_for_status(status), message).model_dump(mode="json"))
    encoded = body.encode()
    kept = [(name, value) for name, value in headers if name.lower() not in _DROPPED_HEADERS]
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            *kept,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(encoded)).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": encoded, "more_body": False}


def _is_plain_text_error(start: Message) -> bool:
    if int(start["status"]) < 400:
        return False
    for name, value in start.get("headers", ()):
        if bytes(name).lower() == b"content-type":
            return bytes(value).lower().startswith(b"text/plain")
    return True  # no content type at all: not one of ours either


class ErrorShapeMiddleware:
    """Rewrite the proxy's plain-text error answers, and answer for a replica that died."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request to the proxy; reshape its plain-text error, or its silence."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        held: Message | None = None  # the start of a plain-text error, until its body ends
        body = bytearray()

        async def reshape(message: Message) -> None:
            nonlocal started, held
            if message["type"] == "http.response.start" and _is_plain_text_error(message):
                held = message
                return
            if held is not None and message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
                if message.get("more_body", False):
                    return
                text = body.decode("utf-8", errors="replace").strip()
                headers = [(bytes(n), bytes(v)) for n, v in held.get("headers", ())]
                for shaped in shaped_error(int(held["status"]), text or "error", headers):
                    await send(shaped)
                started, held = True, None
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, reshape)
        except Exception:
            if started:
                raise
            logger.exception("Serve's proxy failed on %s", scope.get("path"))
            await self._send_lost(scope, send)
            return
        if not started:
            await self._send_lost(scope, send)

    @staticmethod
    async def _send_lost(scope: Scope, send: Send) -> None:
        """The answer to a request that Serve dropped without a word (its replica died)."""
        message = (
            f"{scope.get('path', '')}: the replica serving this request stopped before it "
            "answered (it was killed or crashed); Serve starts a new one. The request may "
            "not have completed: send it again if it is safe to repeat."
        )
        for shaped in shaped_error(500, message):
            await send(shaped)
