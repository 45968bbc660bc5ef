import json

import pytest

from handler_base.errors import (
    ERROR_TYPES,
    ErrorCode,
    ErrorReply,
    InvalidRequestError,
    NotFoundError,
    PlatformError,
    TooLargeError,
    UnavailableError,
)


def test_error_reply_has_the_contract_shape() -> None:
    reply = NotFoundError("no collection named 'x'").to_reply()
    assert json.loads(reply.model_dump_json()) == {
        "error": {"code": "not_found", "message": "no collection named 'x'"}
    }


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_code_round_trips_to_its_exception(code: ErrorCode) -> None:
    error = PlatformError.from_reply(ErrorReply.of(code, "why"))
    assert type(error) is ERROR_TYPES[code]
    assert error.code is code
    assert error.message == "why"
    assert error.to_reply() == ErrorReply.of(code, "why")


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidRequestError("x"), 400),
        (TooLargeError("x"), 413),
        (NotFoundError("x"), 404),
        (UnavailableError("x"), 503),
    ],
)
def test_http_status_of_each_error(error: PlatformError, status: int) -> None:
    assert error.http_status == status


def test_unknown_code_is_rejected() -> None:
    with pytest.raises(ValueError, match="code"):
        ErrorReply.model_validate({"error": {"code": "oops", "message": "m"}})
