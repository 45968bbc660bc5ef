"""Bytes on the wire to typed messages and back: JSON bodies, UTF-8, the Error shape.

A reply that is an error carries the Error shape in its body and the headers of the NATS
micro (services) protocol, ``Nats-Service-Error`` (the message) and
``Nats-Service-Error-Code`` (an HTTP-like status), so generic NATS tools see it as an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER
from pydantic import BaseModel, ValidationError

from handler_base.errors import (
    ERROR_TYPES,
    ErrorCode,
    ErrorReply,
    InternalError,
    InvalidRequestError,
    PlatformError,
    code_for_status,
    describe_validation_error,
    error_from_validation,
)

M = TypeVar("M", bound=BaseModel)

REQUEST_ID_HEADER = "X-Request-Id"
"""Header that carries the request id when the message body has none."""

MAX_ERROR_HEADER_CHARS = 1024
"""The ``Nats-Service-Error`` header is cut to this; the body has the whole message."""


def encode_model(model: BaseModel) -> bytes:
    """The JSON body of a message."""
    return model.model_dump_json().encode()


def decode_model(data: bytes, model_type: type[M]) -> M:
    """Decode and validate a JSON message body.

    Raises:
        InvalidRequestError: the body is not UTF-8, not JSON, or breaks the model's rules.
        TooLargeError: a field is over its size limit.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(
            f"the message is not UTF-8 text (invalid byte at offset {exc.start})"
        ) from exc
    try:
        return model_type.model_validate_json(text)
    except ValidationError as exc:
        raise error_from_validation(exc) from exc


def encode_error(error: PlatformError) -> tuple[bytes, dict[str, str]]:
    """The body and headers of an error reply."""
    message = " ".join(error.message.split())  # one line: it also goes into a header
    if len(message) > MAX_ERROR_HEADER_CHARS:
        message = message[: MAX_ERROR_HEADER_CHARS - 3] + "..."
    headers = {ERROR_HEADER: message or error.code.value, ERROR_CODE_HEADER: str(error.http_status)}
    return encode_model(error.to_reply()), headers


def is_error_reply(headers: Mapping[str, str] | None) -> bool:
    """True when a reply's headers mark it as an error."""
    if not headers:
        return False
    return ERROR_CODE_HEADER in headers or ERROR_HEADER in headers


def error_code_for_status(status: str | None) -> ErrorCode:
    """The error code for a ``Nats-Service-Error-Code`` value (an HTTP-like status)."""
    try:
        number = int(status or "")
    except ValueError:
        return ErrorCode.INTERNAL
    return code_for_status(number) if number >= 400 else ErrorCode.INTERNAL


def decode_error(data: bytes, headers: Mapping[str, str] | None) -> PlatformError:
    """The typed error of an error reply.

    The Error shape in the body wins; a reply from a service that only sets the micro
    protocol headers (``nats.micro`` does) is mapped from its status code.
    """
    try:
        return PlatformError.from_reply(ErrorReply.model_validate_json(data))
    except ValidationError:
        pass
    headers = headers or {}
    code = error_code_for_status(headers.get(ERROR_CODE_HEADER))
    message = headers.get(ERROR_HEADER) or data.decode("utf-8", "replace") or code.value
    return ERROR_TYPES[code](message)


def decode_reply(data: bytes, headers: Mapping[str, str] | None, reply_type: type[M]) -> M:
    """Decode a reply: the reply model, or the typed error it carries.

    Raises:
        PlatformError: the reply is an error (by its headers, or by its Error shape body
            when it is not a valid ``reply_type``), rebuilt as its typed exception.
        InternalError: the reply is neither a valid ``reply_type`` nor an error.
    """
    if is_error_reply(headers):
        raise decode_error(data, headers)
    try:
        return reply_type.model_validate_json(data)
    except ValidationError as exc:
        try:
            error = ErrorReply.model_validate_json(data)
        except ValidationError:
            raise InternalError(
                f"the reply is not a valid {reply_type.__name__}: {describe_validation_error(exc)}"
            ) from exc
        raise PlatformError.from_reply(error) from None
