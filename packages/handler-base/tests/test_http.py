import json
from collections.abc import AsyncGenerator

from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from handler_base.errors import NotFoundError, UnavailableError
from handler_base.http import platform_app, sse_event, stream_events


class Echo(BaseModel):
    text: str = Field(min_length=1, max_length=10)
    times: int = 1


def make_client() -> TestClient:
    app = platform_app("test")

    @app.post("/echo")
    async def echo(body: Echo) -> dict[str, str]:
        return {"text": body.text * body.times}

    @app.post("/fail/{kind}")
    async def fail(kind: str) -> None:
        if kind == "missing":
            raise NotFoundError("no such thing")
        if kind == "busy":
            raise UnavailableError("try again")
        raise RuntimeError("secret internals")

    return TestClient(app, raise_server_exceptions=False)


def test_health_route() -> None:
    assert make_client().get("/-/healthz").status_code == 200


def test_good_request_is_answered() -> None:
    response = make_client().post("/echo", json={"text": "ab", "times": 2})
    assert response.json() == {"text": "abab"}


def test_malformed_json_is_invalid_request() -> None:
    client = make_client()
    response = client.post(
        "/echo", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert client.post("/echo", json={"text": "ok"}).status_code == 200


def test_wrong_type_names_the_field() -> None:
    response = make_client().post("/echo", json={"text": "a", "times": "many"})
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["code"] == "invalid_request"
    assert body["error"]["message"].startswith("times:")


def test_too_long_is_too_large() -> None:
    response = make_client().post("/echo", json={"text": "x" * 11})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"


def test_platform_errors_keep_their_code_and_unavailable_says_when_to_retry() -> None:
    client = make_client()
    missing = client.post("/fail/missing")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    busy = client.post("/fail/busy")
    assert (busy.status_code, busy.json()["error"]["code"]) == (503, "unavailable")
    assert busy.headers["retry-after"] == "1"


def test_unexpected_exception_is_internal_and_hides_details() -> None:
    response = make_client().post("/fail/boom")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal"
    assert "secret" not in response.text


def test_unknown_route_is_not_found() -> None:
    response = make_client().get("/nowhere")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_sse_event_format() -> None:
    assert sse_event({"a": 1}, event="text") == 'event: text\ndata: {"a":1}\n\n'
    assert sse_event("[DONE]") == "data: [DONE]\n\n"
    assert sse_event(Echo(text="hi")) == 'data: {"text":"hi","times":1}\n\n'


def test_health_names_the_app_distribution_and_its_installed_version() -> None:
    from importlib.metadata import version

    body = TestClient(platform_app("test", distribution="handler-base")).get("/-/healthz").json()
    assert body == {"status": "ok", "app": "handler-base", "version": version("handler-base")}
    # By default: the distribution named after the calling module (this test module has none).
    assert TestClient(platform_app("test")).get("/-/healthz").json()["status"] == "ok"


def test_file_upload_openapi_documents_the_form_and_other_bodies() -> None:
    from handler_base.http import BINARY_SCHEMA, file_upload_openapi

    doc = file_upload_openapi(
        {"language": {"type": "string"}},
        other_content={"audio/wav": {"schema": BINARY_SCHEMA}},
    )
    body = doc["requestBody"]
    assert body["required"] is True
    form = body["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["file"]
    assert form["properties"] == {"file": BINARY_SCHEMA, "language": {"type": "string"}}
    assert body["content"]["audio/wav"] == {"schema": BINARY_SCHEMA}


def streaming_client(closed: list[str]) -> TestClient:
    """An app whose ``/stream/{how}`` streams two words, then ends as ``how`` says."""
    app = platform_app("stream-test")

    async def words(how: str) -> AsyncGenerator[str, None]:
        try:
            if how == "refused":
                raise UnavailableError("down before the first word")
            yield "one"
            yield "two"
            if how == "platform-error":
                raise NotFoundError("gone midway")
            if how == "bug":
                raise KeyError("a bug")
        finally:
            closed.append(how)

    @app.get("/stream/{how}")
    async def stream(how: str) -> StreamingResponse:
        return await stream_events(
            words(how),
            lambda word: sse_event({"text": word}, event="text"),
            failure="the words failed",
            error_event="error",
            opening=[sse_event("start")],
            closing=[sse_event("[DONE]")],
        )

    return TestClient(app, raise_server_exceptions=False)


def test_stream_events_sends_items_between_opening_and_closing() -> None:
    closed: list[str] = []
    response = streaming_client(closed).get("/stream/fine")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text == (
        "data: start\n\n"
        'event: text\ndata: {"text":"one"}\n\n'
        'event: text\ndata: {"text":"two"}\n\n'
        "data: [DONE]\n\n"
    )
    assert closed == ["fine"]


def test_stream_events_refused_before_the_first_item_is_an_error_response() -> None:
    closed: list[str] = []
    response = streaming_client(closed).get("/stream/refused")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"
    assert closed == ["refused"]


def test_stream_events_ends_any_later_failure_with_an_error_event() -> None:
    closed: list[str] = []
    client = streaming_client(closed)
    for how, code, message in [
        ("platform-error", "not_found", "gone midway"),
        ("bug", "internal", "the words failed"),
    ]:
        events = client.get(f"/stream/{how}").text.split("\n\n")
        assert events[1:3] == [
            'event: text\ndata: {"text":"one"}',
            'event: text\ndata: {"text":"two"}',
        ]
        name, data = events[3].split("\n")
        assert name == "event: error"
        error = json.loads(data.removeprefix("data: "))["error"]
        assert (error["code"], error["message"]) == (code, message)
        assert "[DONE]" not in events[4:]
    assert closed == ["platform-error", "bug"]
