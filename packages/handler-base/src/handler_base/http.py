"""FastAPI pieces every Serve app of the platform shares: the error shape, health, SSE.

:func:`install_error_handlers` makes every failure of an app answer
``{"error": {"code", "message"}}`` with the status of its code: a
:class:`~handler_base.errors.PlatformError` as raised, a request that fails validation
as ``invalid_request`` (400) or ``too_large`` (413), a malformed JSON body as
``invalid_request``, an unknown route as ``not_found``, anything else as ``internal``
(logged with its traceback; the message says nothing of the inside).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import AsyncIterator, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from handler_base.errors import (
    SIZE_ERROR_TYPES,
    ErrorCode,
    ErrorReply,
    InternalError,
    InvalidRequestError,
    PlatformError,
    TooLargeError,
    error_from_validation,
)

logger = logging.getLogger(__name__)

_CODE_OF_STATUS = {
    400: ErrorCode.INVALID_REQUEST,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.INVALID_REQUEST,
    413: ErrorCode.TOO_LARGE,
    415: ErrorCode.INVALID_REQUEST,
    422: ErrorCode.INVALID_REQUEST,
    503: ErrorCode.UNAVAILABLE,
    504: ErrorCode.TIMEOUT,
}


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
        code = _CODE_OF_STATUS.get(exc.status_code)
        if code is None:
            code = ErrorCode.INTERNAL if exc.status_code >= 500 else ErrorCode.INVALID_REQUEST
        body = ErrorReply.of(code, str(exc.detail)).model_dump(mode="json")
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

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


def platform_app(title: str, description: str = "", *, distribution: str | None = None) -> FastAPI:
    """A FastAPI app with the platform's error shape and health route.

    Args:
        title: The app's title (OpenAPI).
        description: What it does (OpenAPI).
        distribution: The distribution that defines the app, whose version ``/-/healthz``
            reports; by default the one named after the calling module's top-level
            package (``chat_handler.deployment`` -> ``chat-handler``).
    """
    if distribution is None:
        distribution = _distribution_of_caller(1)
    found = distribution_version(distribution) if distribution else None
    app = FastAPI(title=title, description=description, version=found or "unknown")
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
