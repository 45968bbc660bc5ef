"""The platform's error shape and the typed exceptions that carry it.

Every failure that reaches a caller, over HTTP or NATS, is answered as
``{"error": {"code": ..., "message": ...}}`` with one of the codes below. Code raises
a :class:`PlatformError` subclass; the transport layer turns it into that shape.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError


class ErrorCode(StrEnum):
    """The error codes of the public contract."""

    INVALID_REQUEST = "invalid_request"
    TOO_LARGE = "too_large"
    NOT_FOUND = "not_found"
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"
    UNAUTHORIZED = "unauthorized"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
    ErrorCode.UNAUTHORIZED: 401,
}


class ErrorDetail(BaseModel):
    """The inner object of an error reply."""

    model_config = ConfigDict(extra="forbid")

    code: ErrorCode
    message: str


class ErrorReply(BaseModel):
    """An error reply: ``{"error": {"code", "message"}}``."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail

    @classmethod
    def of(cls, code: ErrorCode, message: str) -> ErrorReply:
        """Build an error reply from a code and a message."""
        return cls(error=ErrorDetail(code=code, message=message))


class PlatformError(Exception):
    """Base of every error that is answered to a caller with the error shape."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def http_status(self) -> int:
        """The HTTP status this error is answered with."""
        return HTTP_STATUS[self.code]

    def to_reply(self) -> ErrorReply:
        """The error shape of this error."""
        return ErrorReply.of(self.code, self.message)

    @staticmethod
    def from_reply(reply: ErrorReply) -> PlatformError:
        """Rebuild the typed exception from an error reply received from a service."""
        return ERROR_TYPES[reply.error.code](reply.error.message)


class InvalidRequestError(PlatformError):
    """The request is malformed or breaks a documented rule."""

    code = ErrorCode.INVALID_REQUEST


class TooLargeError(PlatformError):
    """The request is over a documented size limit."""

    code = ErrorCode.TOO_LARGE


class NotFoundError(PlatformError):
    """The thing the request names does not exist."""

    code = ErrorCode.NOT_FOUND


class RequestTimeoutError(PlatformError):
    """The work did not finish within its deadline."""

    code = ErrorCode.TIMEOUT


class UnavailableError(PlatformError):
    """A service the request needs cannot be reached or is overloaded."""

    code = ErrorCode.UNAVAILABLE


class InternalError(PlatformError):
    """An unexpected failure inside the platform."""

    code = ErrorCode.INTERNAL


class UnauthorizedError(PlatformError):
    """The request carries no API key, or one the service does not accept."""

    code = ErrorCode.UNAUTHORIZED


ERROR_TYPES: dict[ErrorCode, type[PlatformError]] = {
    cls.code: cls
    for cls in (
        InvalidRequestError,
        TooLargeError,
        NotFoundError,
        RequestTimeoutError,
        UnavailableError,
        InternalError,
        UnauthorizedError,
    )
}


def code_for_status(status: int) -> ErrorCode:
    """The error code of an HTTP-like error status whose reply did not carry the shape.

    The inverse of :data:`HTTP_STATUS`, widened: 408 is a timeout, 429 and 502 mean the
    service cannot take the request now, and other statuses fall to ``invalid_request``
    (4xx) or ``internal`` (5xx).
    """
    if status in (408, 504):
        return ErrorCode.TIMEOUT
    if status in (429, 502, 503):
        return ErrorCode.UNAVAILABLE
    exact = {401: ErrorCode.UNAUTHORIZED, 404: ErrorCode.NOT_FOUND, 413: ErrorCode.TOO_LARGE}
    if status in exact:
        return exact[status]
    return ErrorCode.INVALID_REQUEST if status < 500 else ErrorCode.INTERNAL


def error_for_status(status: int, message: str) -> PlatformError:
    """The typed error of an HTTP error status (400 or more), see :func:`code_for_status`."""
    return ERROR_TYPES[code_for_status(status)](message)


def describe_validation_error(exc: ValidationError) -> str:
    """Say in one line which fields of a request are wrong and why."""
    parts: list[str] = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or "body"
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


SIZE_ERROR_TYPES = frozenset({"too_large", "string_too_long", "too_long", "bytes_too_long"})
"""Validation error types that mean "over a size limit" rather than "malformed"."""


def error_from_validation(exc: ValidationError) -> PlatformError:
    """Map a pydantic validation error to ``too_large`` or ``invalid_request``.

    Over-length strings and lists, and the size limits of the message models (see
    :func:`too_large`), are ``too_large``; everything else is ``invalid_request``.
    """
    message = describe_validation_error(exc)
    if any(err["type"] in SIZE_ERROR_TYPES for err in exc.errors()):
        return TooLargeError(message)
    return InvalidRequestError(message)


ModelT = TypeVar("ModelT", bound=BaseModel)


def validate_as(model_type: type[ModelT], value: ModelT | Any) -> ModelT:
    """``value`` as a ``model_type`` (handle callers may pass a plain mapping).

    Raises:
        InvalidRequestError: It is malformed.
        TooLargeError: It breaks a size limit.
    """
    if isinstance(value, model_type):
        return value
    try:
        return model_type.model_validate(value)
    except ValidationError as exc:
        raise error_from_validation(exc) from exc


def too_large(message: str, **context: Any) -> Exception:
    """A validation error for a model validator whose input is over a size limit."""
    from pydantic_core import PydanticCustomError

    return PydanticCustomError("too_large", message, context or None)
