"""The wire format, without a server: JSON bodies, UTF-8, the Error shape and headers."""

import json

import pytest
from pydantic import BaseModel

from handler_base.errors import (
    ErrorCode,
    InternalError,
    InvalidRequestError,
    NotFoundError,
    PlatformError,
    TooLargeError,
    UnavailableError,
)
from handler_base.messages import ChatRequest, ChatResponse
from handler_base.messaging.codec import (
    MAX_ERROR_HEADER_CHARS,
    decode_error,
    decode_model,
    decode_reply,
    encode_error,
    encode_model,
    error_code_for_status,
)

ERROR = "Nats-Service-Error"
ERROR_CODE = "Nats-Service-Error-Code"


def test_model_round_trip() -> None:
    request = ChatRequest(query="what is ray?", top_k=20, request_id="r-1")
    assert decode_model(encode_model(request), ChatRequest) == request


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", InvalidRequestError),
        (b"", InvalidRequestError),
        (b'{"query": 5}', InvalidRequestError),
        (b'{"query": "x", "top_k": "many"}', InvalidRequestError),
        (b'{"query": "x", "unknown": 1}', InvalidRequestError),
        (b"[1, 2]", InvalidRequestError),
        (b'{"query": "\xff\xfe"}', InvalidRequestError),
        (json.dumps({"query": "x" * 9000}).encode(), TooLargeError),
    ],
)
def test_bad_bodies_map_to_typed_errors(body: bytes, expected: type[PlatformError]) -> None:
    with pytest.raises(PlatformError) as info:
        decode_model(body, ChatRequest)
    assert type(info.value) is expected
    assert info.value.message


def test_non_utf8_says_so() -> None:
    with pytest.raises(InvalidRequestError, match="not UTF-8"):
        decode_model(b'{"query": "caf\xe9"}', ChatRequest)


def test_error_reply_has_shape_and_micro_headers() -> None:
    body, headers = encode_error(NotFoundError("no collection named 'x'"))
    assert json.loads(body) == {
        "error": {"code": "not_found", "message": "no collection named 'x'"}
    }
    assert headers == {ERROR: "no collection named 'x'", ERROR_CODE: "404"}


def test_error_header_is_one_short_line() -> None:
    body, headers = encode_error(InvalidRequestError("line one\r\nline two " + "x" * 5000))
    assert "\n" not in headers[ERROR]
    assert "\r" not in headers[ERROR]
    assert len(headers[ERROR]) == MAX_ERROR_HEADER_CHARS
    assert json.loads(body)["error"]["message"].startswith("line one\r\nline two")


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("400", ErrorCode.INVALID_REQUEST),
        ("413", ErrorCode.TOO_LARGE),
        ("404", ErrorCode.NOT_FOUND),
        ("504", ErrorCode.TIMEOUT),
        ("503", ErrorCode.UNAVAILABLE),
        ("500", ErrorCode.INTERNAL),
        ("418", ErrorCode.INVALID_REQUEST),
        ("502", ErrorCode.UNAVAILABLE),
        ("401", ErrorCode.UNAUTHORIZED),
        ("408", ErrorCode.TIMEOUT),
        ("200", ErrorCode.INTERNAL),
        ("oops", ErrorCode.INTERNAL),
        (None, ErrorCode.INTERNAL),
    ],
)
def test_status_to_code(status: str | None, code: ErrorCode) -> None:
    assert error_code_for_status(status) is code


def test_reply_decodes_to_model() -> None:
    reply = ChatResponse(response="hi", request_id="r")
    assert decode_reply(encode_model(reply), None, ChatResponse) == reply


def test_error_reply_raises_typed_error() -> None:
    body, headers = encode_error(UnavailableError("llm is down"))
    with pytest.raises(UnavailableError, match="llm is down"):
        decode_reply(body, headers, ChatResponse)


def test_error_shape_without_headers_is_still_an_error() -> None:
    body, _ = encode_error(TooLargeError("too big"))
    with pytest.raises(TooLargeError, match="too big"):
        decode_reply(body, None, ChatResponse)


def test_micro_style_error_without_our_body() -> None:
    # nats.micro answers an exception with these headers and an empty body.
    error = decode_error(b"", {ERROR: "ValueError('x')", ERROR_CODE: "500"})
    assert isinstance(error, InternalError)
    assert error.message == "ValueError('x')"


def test_invalid_reply_is_internal_error() -> None:
    with pytest.raises(InternalError, match="not a valid ChatResponse"):
        decode_reply(b'{"answer": 1}', None, ChatResponse)


def test_reply_model_with_an_error_field_is_not_mistaken() -> None:
    class Status(BaseModel):
        error: str | None = None

    assert decode_reply(b'{"error": "none"}', None, Status) == Status(error="none")
