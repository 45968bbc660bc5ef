"""FastAPI pieces every Serve app of the platform shares: the error shape, health, SSE.

:func:`install_error_handlers` makes every failure of an app answer
``{"error": {"code", "message"}}`` with the status of its code: a
:class:`~handler_base.errors.PlatformError` as raised, a request that fails validation
as ``invalid_request`` (400) or ``too_large`` (413), a malformed JSON body as
``invalid_request``, an unknown route as ``not_found``, anything else as ``internal``
(logged with its traceback; the message says nothing of the inside).

Every app made by :func:`platform_app` also has a :class:`RequestGuard` in front of its
routes: API keys, admission (overload shedding) and request body sizes, checked before
any body is read or any route runs. The deployment sets it up in its ``__init__`` with
:func:`configure_guard`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import sys
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Protocol, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from handler_base.errors import (
    SIZE_ERROR_TYPES,
    ErrorCode,
    ErrorReply,
    InternalError,
    InvalidRequestError,
    PlatformError,
    TooLargeError,
    UnauthorizedError,
    UnavailableError,
    code_for_status,
    error_from_validation,
)
from handler_base.settings import Settings

logger = logging.getLogger(__name__)

_Item = TypeVar("_Item")


def error_response(error: PlatformError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The HTTP response of ``error``: its status, the error shape as the body."""
    return JSONResponse(
        error.to_reply().model_dump(mode="json"),
        status_code=error.http_status,
        headers=dict(headers or {}),
    )


def _describe_request_validation(exc: RequestValidationError) -> PlatformError:
    """FastAPI's validation errors as one of ours, with ``body.`` dropped from field paths."""
    parts: list[str] = []
    too_large = False
    for err in exc.errors():
        location = [str(p) for p in err.get("loc", ()) if p != "body"]
        where = ".".join(location) or "body"
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "json_invalid":
            message = "the body is not valid JSON"
        parts.append(f"{where}: {message}")
        too_large = too_large or err.get("type") in SIZE_ERROR_TYPES
    return (TooLargeError if too_large else InvalidRequestError)("; ".join(parts))


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` with the platform's error shape."""

    @app.exception_handler(PlatformError)
    async def _platform_error(request: Request, exc: PlatformError) -> JSONResponse:
        headers = {"Retry-After": "1"} if exc.code is ErrorCode.UNAVAILABLE else None
        return error_response(exc, headers)

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(_describe_request_validation(exc))

    @app.exception_handler(ValidationError)
    async def _model_invalid(request: Request, exc: ValidationError) -> JSONResponse:
        return error_response(error_from_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        reply = ErrorReply.of(code_for_status(exc.status_code), str(exc.detail))
        return JSONResponse(
            reply.model_dump(mode="json"), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("%s %s failed", request.method, request.url.path)
        return error_response(InternalError(f"internal error while serving {request.url.path}"))


def add_health_route(app: FastAPI, distribution: str | None = None) -> None:
    """``GET /-/healthz``: 200 once the app's replica is serving.

    Args:
        app: The app to add the route to.
        distribution: The distribution (wheel) that defines the app. When given, the
            body also names it and its installed version, ``{"status": "ok", "app":
            "chat-handler", "version": "0.1.0"}``: what a release switch is checked by.
    """
    body = {"status": "ok"}
    if distribution is not None:
        body["app"] = distribution
        body["version"] = distribution_version(distribution) or "unknown"

    @app.get("/-/healthz", include_in_schema=False)
    async def _healthz() -> dict[str, str]:
        return body


def distribution_version(distribution: str) -> str | None:
    """The installed version of ``distribution`` (as this process sees it), or None."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _distribution_of_caller(depth: int) -> str | None:
    """The distribution of the module ``depth`` frames up, by our naming rule.

    Each of our wheels is named after its top-level module: ``chat_handler`` is
    ``chat-handler``.
    """
    module: str = sys._getframe(depth + 1).f_globals.get("__name__", "")
    top = module.split(".")[0]
    if not top or top == "__main__":
        return None
    return top.replace("_", "-")


# --- the request guard ------------------------------------------------------------------

HEALTH_PATH = "/-/healthz"


class GuardRules(BaseModel):
    """What an app declares where its routes are: body limits and open routes.

    Attributes:
        max_body_bytes: Largest request body; None: no limit (every app of the platform
            declares one, see :mod:`handler_base.deployment`). A larger
            ``Content-Length`` is answered 413 ``too_large`` before the body is read; a
            chunked body is counted as it arrives and refused as soon as it passes.
        route_body_bytes: Another limit for some routes, by path within the app
            (``/knowledge/documents``), whatever the method.
        public_paths: Paths within the app open without an API key; one ending in ``*``
            is a prefix (``/static/*``). ``/-/healthz`` is always open.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_body_bytes: int | None = Field(default=None, ge=0)
    route_body_bytes: dict[str, int] = Field(default_factory=dict)
    public_paths: frozenset[str] = frozenset()

    def body_limit(self, path: str) -> int | None:
        """The body limit of the route at ``path``."""
        return self.route_body_bytes.get(path, self.max_body_bytes)

    def is_public(self, path: str) -> bool:
        """True when ``path`` needs no API key."""
        if path == HEALTH_PATH or path in self.public_paths:
            return True
        return any(p.endswith("*") and path.startswith(p[:-1]) for p in self.public_paths)


class _QueueLimits(Protocol):
    """Serve's names for a deployment's queue limits (HandlerArgs, DeploymentResources)."""

    @property
    def max_ongoing_requests(self) -> int: ...
    @property
    def max_queued_requests(self) -> int: ...
    @property
    def retry_after_s(self) -> float: ...


class AdmissionLimits(BaseModel):
    """How many HTTP requests one replica takes at once; past that it sheds at once.

    Attributes:
        max_working: Requests being worked on (a stream counts until it ends); None:
            no limit, nothing is ever shed.
        max_waiting: Requests waiting, first in first out, for a working slot; beyond
            that a request is answered 503 ``unavailable`` with ``Retry-After`` at once.
            None: the wait is unbounded (only the deadline of the caller ends it).
        retry_after_s: ``Retry-After`` of that 503 (rounded up to whole seconds).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_working: int | None = Field(default=None, ge=1)
    max_waiting: int | None = Field(default=0, ge=0)
    retry_after_s: float = Field(default=1.0, ge=0.0)

    @classmethod
    def of(cls, limits: _QueueLimits) -> AdmissionLimits:
        """Working = ``max_ongoing_requests``, waiting = ``max_queued_requests``."""
        return cls(
            max_working=limits.max_ongoing_requests,
            max_waiting=limits.max_queued_requests,
            retry_after_s=limits.retry_after_s,
        )


class _Admission:
    """A counting gate: ``max_working`` at once, ``max_waiting`` more in FIFO order."""

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self.working = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    async def enter(self) -> bool:
        """Take a working slot, waiting for one if there is room; False: shed."""
        max_working = self.limits.max_working
        if max_working is None:
            self.working += 1
            return True
        if self.working < max_working and not self._waiters:
            self.working += 1
            return True
        max_waiting = self.limits.max_waiting
        if max_waiting is not None and len(self._waiters) >= max_waiting:
            return False
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(ticket)
        try:
            await ticket
        except BaseException:
            if ticket.done() and not ticket.cancelled():
                self.leave()  # the slot was handed over just as the caller left
            else:
                ticket.cancel()
                self._drop(ticket)
            raise
        return True

    def leave(self) -> None:
        """Give the slot to the first waiter, or free it."""
        while self._waiters:
            ticket = self._waiters.popleft()
            if not ticket.done():
                ticket.set_result(None)
                return
        self.working -= 1

    def _drop(self, ticket: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(ticket)


def _digest(key: str | bytes) -> bytes:
    """Keys are compared as SHA-256 digests: equal lengths, so nothing leaks by length."""
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


def _guard_named(name: str, rules: GuardRules) -> RequestGuard:
    """The guard of this process called ``name`` (unpickling lands here)."""
    return RequestGuard.find(name, rules)


class RequestGuard:
    """The checks in front of one app's routes: API keys, admission, body size.

    One per app and process, found by name: ``serve.ingress`` serves a pickled copy of
    the app, and unpickling a guard gives back this process's guard of that name, so
    :func:`configure_guard` in the deployment's ``__init__`` reaches the guard that
    really serves. The rules (body limits, open routes) come with the app; the keys and
    the admission limits are set by :meth:`configure`.
    """

    _by_name: dict[str, RequestGuard] = {}

    def __init__(self, name: str, rules: GuardRules) -> None:
        self.name = name
        self.rules = rules
        self._key_digests: tuple[bytes, ...] = ()
        self._admission = _Admission(AdmissionLimits())

    @classmethod
    def declare(cls, name: str, rules: GuardRules) -> RequestGuard:
        """The guard called ``name``, made if new, with these rules."""
        guard = cls.find(name, rules)
        guard.rules = rules
        return guard

    @classmethod
    def find(cls, name: str, rules: GuardRules) -> RequestGuard:
        """The guard called ``name``; made with ``rules`` if this process has none yet."""
        guard = cls._by_name.get(name)
        if guard is None:
            guard = cls._by_name[name] = cls(name, rules)
        return guard

    def __reduce__(self) -> tuple[Any, tuple[str, GuardRules]]:
        return _guard_named, (self.name, self.rules)

    def __repr__(self) -> str:
        return (
            f"RequestGuard({self.name!r}, keys={len(self._key_digests)}, "
            f"admission={self.admission!r})"
        )

    def configure(
        self, *, api_keys: Sequence[str] = (), admission: AdmissionLimits | None = None
    ) -> None:
        """Set the keys and the admission limits; requests in flight finish under the old.

        Args:
            api_keys: Keys accepted as ``Authorization: Bearer <key>`` or ``X-API-Key``;
                empty: no key is needed.
            admission: Working and waiting limits; None: no limit.
        """
        self._key_digests = tuple(_digest(k) for k in api_keys if k)
        self._admission = _Admission(admission or AdmissionLimits())

    @property
    def admission(self) -> AdmissionLimits:
        """The admission limits in force."""
        return self._admission.limits

    @property
    def working(self) -> int:
        """Requests being worked on now."""
        return self._admission.working

    @property
    def waiting(self) -> int:
        """Requests waiting for a working slot now."""
        return self._admission.waiting

    @property
    def needs_key(self) -> bool:
        """True when API keys are configured."""
        return bool(self._key_digests)

    def accepts(self, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        """True when the headers carry an accepted key (compared in constant time)."""
        offered: list[bytes] = []
        for name, value in headers:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    offered.append(token.strip())
            elif name == b"x-api-key":
                offered.append(value.strip())
        accepted = False
        for token in offered:
            given = _digest(token)
            for key in self._key_digests:
                accepted |= hmac.compare_digest(given, key)
        return accepted


def configure_guard(
    app: FastAPI, admission: AdmissionLimits | None = None, settings: Settings | None = None
) -> RequestGuard:
    """Set up the guard of ``app`` in this replica: keys from ``API_KEYS``, and ``admission``.

    Call it in the deployment's ``__init__``: the keys are read from the replica's own
    environment (or ``SECRETS_DIR``), never from builder arguments.

    Args:
        app: An app made by :func:`platform_app`.
        admission: The replica's working and waiting limits; None: no limit.
        settings: Where the keys come from; ``Settings()`` when None.
    """
    guard = guard_of(app)
    keys = (settings or Settings()).accepted_api_keys()
    guard.configure(api_keys=keys, admission=admission)
    logger.info("%s: %s", app.title, guard)
    return guard


def guard_of(app: FastAPI) -> RequestGuard:
    """The guard of an app made by :func:`platform_app`."""
    for middleware in app.user_middleware:
        guard = middleware.kwargs.get("guard")
        if isinstance(guard, RequestGuard):
            return guard
    raise ValueError(f"{app.title!r} has no request guard: make it with platform_app")


def _route_path(scope: Scope) -> str:
    """The path within the app (Serve's route prefix, ``root_path``, taken off)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path or "/"


def _content_length(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class _GuardMiddleware:
    """Pure ASGI: the guard's checks, in order, before the app sees the request.

    1. Access: with keys configured, a route that is not public needs one; else 401
       ``unauthorized`` with ``WWW-Authenticate: Bearer``.
    2. Size: a ``Content-Length`` over the route's limit is 413 ``too_large``.
    3. Admission: a working slot, or a place in the waiting line; else 503
       ``unavailable`` with ``Retry-After``. The slot is held until the app returns,
       so a streamed response counts until its last event.
    4. Size again, while the app reads: a chunked body past the limit ends the read and
       the answer is 413 ``too_large``.

    A refused request never reaches the app. ``/-/healthz`` skips every check.
    """

    def __init__(self, app: ASGIApp, guard: RequestGuard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = _route_path(scope)
        if path == HEALTH_PATH:
            await self.app(scope, receive, send)
            return
        guard = self.guard
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if guard.needs_key and not guard.rules.is_public(path) and not guard.accepts(headers):
            await _refuse_unauthorized(headers, scope, receive, send)
            return
        limit = guard.rules.body_limit(path)
        declared = _content_length(headers)
        if limit is not None and declared is not None and declared > limit:
            message = f"the request body is {declared} bytes; the limit of {path} is {limit}"
            await error_response(TooLargeError(message))(scope, receive, send)
            return
        admission = guard._admission
        if not await admission.enter():
            retry_after = max(0, math.ceil(admission.limits.retry_after_s))
            busy = UnavailableError(
                f"the service is at capacity ({admission.working} working, "
                f"{admission.waiting} waiting); retry after {retry_after} s"
            )
            await error_response(busy, {"Retry-After": str(retry_after)})(scope, receive, send)
            return
        try:
            if limit is not None and declared is None:
                await _BodyCountingCall(self.app, path, limit)(scope, receive, send)
            else:
                await self.app(scope, receive, send)
        finally:
            admission.leave()


async def _refuse_unauthorized(
    headers: Sequence[tuple[bytes, bytes]], scope: Scope, receive: Receive, send: Send
) -> None:
    offered = any(name in (b"authorization", b"x-api-key") for name, _ in headers)
    message = (
        "the API key is not accepted"
        if offered
        else "an API key is needed: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
    )
    response = error_response(UnauthorizedError(message), {"WWW-Authenticate": "Bearer"})
    await response(scope, receive, send)


class _BodyCountingCall:
    """One call of the app whose body (no ``Content-Length``) is counted as it arrives.

    Past the limit the app's next read fails (413, which it answers in the error shape),
    and whatever it answers is replaced by the guard's own 413.
    """

    def __init__(self, app: ASGIApp, path: str, limit: int) -> None:
        self.app = app
        self.path = path
        self.limit = limit
        self.received = 0
        self.over = False
        self.replaced = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                if self.received > self.limit:
                    self.over = True
                    raise StarletteHTTPException(413, self._message())
            return message

        async def guarded_send(message: Message) -> None:
            if not self.over:
                await send(message)
            elif message["type"] == "http.response.start" and not self.replaced:
                self.replaced = True
                await error_response(TooLargeError(self._message()))(scope, receive, send)

        await self.app(scope, counted_receive, guarded_send)

    def _message(self) -> str:
        return f"the request body is over the limit of {self.path}, {self.limit} bytes"


class _ServePrefixRoot:
    """Route a request for the bare route prefix (``POST /chat``) to the app's ``/``.

    Serve hands the app ``path == root_path`` for the prefix itself; Starlette would
    answer that with a 307 to ``/chat/``, which many clients do not follow for a POST.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        root_path = scope.get("root_path", "")
        if scope["type"] == "http" and root_path and scope["path"] == root_path:
            scope = {**scope, "path": root_path + "/", "raw_path": (root_path + "/").encode()}
        await self.app(scope, receive, send)


def platform_app(
    title: str,
    description: str = "",
    *,
    distribution: str | None = None,
    max_body_bytes: int | None = None,
    route_body_bytes: Mapping[str, int] | None = None,
    public_paths: Collection[str] = (),
) -> FastAPI:
    """A FastAPI app with the platform's error shape, health route and request guard.

    Args:
        title: The app's title (OpenAPI).
        description: What it does (OpenAPI).
        distribution: The distribution that defines the app, whose version ``/-/healthz``
            reports; by default the one named after the calling module's top-level
            package (``chat_handler.deployment`` -> ``chat-handler``).
        max_body_bytes: The guard's request body limit (see :class:`GuardRules`); None:
            no limit.
        route_body_bytes: Other limits for some routes, by path within the app.
        public_paths: Routes open without an API key (``/-/healthz`` always is).
    """
    caller = sys._getframe(1).f_globals.get("__name__", "")
    if distribution is None:
        distribution = _distribution_of_caller(1)
    found = distribution_version(distribution) if distribution else None
    app = FastAPI(title=title, description=description, version=found or "unknown")
    rules = GuardRules(
        max_body_bytes=max_body_bytes,
        route_body_bytes=dict(route_body_bytes or {}),
        public_paths=frozenset(public_paths),
    )
    app.add_middleware(_GuardMiddleware, guard=RequestGuard.declare(f"{caller}:{title}", rules))
    app.add_middleware(_ServePrefixRoot)
    install_error_handlers(app)
    add_health_route(app, distribution if found else None)
    return app


def sse_event(data: BaseModel | Mapping[str, Any] | str, event: str | None = None) -> str:
    """One server-sent event: optional ``event:`` line, one ``data:`` line, a blank line."""
    if isinstance(data, BaseModel):
        payload = data.model_dump_json(exclude_none=True)
    elif isinstance(data, str):
        payload = data
    else:
        payload = json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n"


def sse_response(events: AsyncIterator[str]) -> StreamingResponse:
    """A ``text/event-stream`` response of already formatted events (see :func:`sse_event`)."""
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def stream_events(
    items: AsyncGenerator[_Item, None],
    encode: Callable[[_Item], str],
    *,
    failure: str,
    error_event: str | None = None,
    opening: Sequence[str] = (),
    closing: Sequence[str] = (),
) -> StreamingResponse:
    """An SSE response of ``items``, errors included, once the first item is there.

    The first item is awaited before the response starts, so a request refused before
    any output (a bad request, a service that is down) is answered with its status and
    the error shape. After that the status is sent: an error ends the stream with an
    error event in the error shape (``event: error_event`` when given, else data only),
    a :class:`PlatformError` with its own code and message, anything else as
    ``internal`` with ``failure`` (and a log line with its traceback). The generator is
    closed however the stream ends, a client that goes away included.

    Args:
        items: What to send, in order.
        encode: One item as a formatted event (:func:`sse_event`).
        failure: The message of an unexpected exception, e.g. "the voice answer failed".
        error_event: The SSE event name of an error; None for a ``data:``-only event.
        opening: Events sent before the first item.
        closing: Events sent after the last item (not after an error).

    Raises:
        PlatformError: What the generator raised before its first item.
    """
    try:
        first = await anext(items)
    except BaseException:
        await items.aclose()
        raise

    async def events() -> AsyncIterator[str]:
        try:
            for event in opening:
                yield event
            yield encode(first)
            async for item in items:
                yield encode(item)
            for event in closing:
                yield event
        except PlatformError as exc:
            yield sse_event(exc.to_reply(), event=error_event)
        except Exception:
            logger.exception("%s", failure)
            yield sse_event(InternalError(failure).to_reply(), event=error_event)
        finally:
            await items.aclose()

    return sse_response(events())


BINARY_SCHEMA: dict[str, Any] = {"type": "string", "format": "binary"}
"""OpenAPI schema of a file's bytes."""


def file_upload_openapi(
    fields: Mapping[str, Mapping[str, Any]],
    *,
    file_field: str = "file",
    other_content: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """``openapi_extra`` of a route that reads a multipart upload itself (not via FastAPI).

    Args:
        fields: The form fields beside the file, each with its JSON schema.
        file_field: The form field that carries the file (required).
        other_content: More accepted bodies by content type, e.g. ``{"audio/wav": ...}``.

    Returns:
        The ``requestBody`` for the route's OpenAPI document.
    """
    form = {
        "type": "object",
        "required": [file_field],
        "properties": {file_field: BINARY_SCHEMA, **{k: dict(v) for k, v in fields.items()}},
    }
    content: dict[str, Any] = {"multipart/form-data": {"schema": form}}
    content.update({k: dict(v) for k, v in (other_content or {}).items()})
    return {"requestBody": {"required": True, "content": content}}
