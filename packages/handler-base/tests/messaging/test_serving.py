"""Request/reply against a real nats-server: the serving helper and the typed request."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, get_current_span

from handler_base.errors import (
    InvalidRequestError,
    NotFoundError,
    RequestTimeoutError,
    TooLargeError,
    UnavailableError,
)
from handler_base.messages import ChatRequest, ChatResponse
from handler_base.messaging import RequestServer, flush, request, serve
from handler_base.testing.nats import NatsServer
from handler_base.testing.nats_fixtures import NatsConnect

pytestmark = pytest.mark.integration

SUBJECT = "test.chat.request"
ERROR = "Nats-Service-Error"
ERROR_CODE = "Nats-Service-Error-Code"


async def echo(request: ChatRequest) -> ChatResponse:
    if request.query == "boom":
        raise RuntimeError("the model fell over")
    if request.query == "missing":
        raise NotFoundError(f"no collection named {request.collection!r}")
    return ChatResponse(response=f"echo: {request.query}", request_id=request.request_id)


async def ask(nc: NATS, query: str, **fields: Any) -> ChatResponse:
    return await request(nc, SUBJECT, ChatRequest(query=query, **fields), ChatResponse, timeout=5)


async def test_request_reply(nats_client: NATS) -> None:
    async with RequestServer(nats_client, SUBJECT, echo, ChatRequest):
        reply = await ask(nats_client, "hello", request_id="r-1")
    assert reply == ChatResponse(response="echo: hello", request_id="r-1")


async def test_queue_group_splits_work(nats_connect: NatsConnect) -> None:
    served: Counter[str] = Counter()

    def named(name: str) -> Callable[[ChatRequest], Any]:
        async def handler(request: ChatRequest) -> ChatResponse:
            served[name] += 1
            return ChatResponse(response=name)

        return handler

    a, b, client = await nats_connect(), await nats_connect(), await nats_connect()
    async with (
        RequestServer(a, SUBJECT, named("a"), ChatRequest, queue="chat"),
        RequestServer(b, SUBJECT, named("b"), ChatRequest, queue="chat"),
    ):
        replies = await asyncio.gather(*(ask(client, f"q{i}") for i in range(60)))
    assert sum(served.values()) == 60  # each request answered once, not by both
    assert served["a"] > 0, served
    assert served["b"] > 0, served
    assert Counter(r.response for r in replies) == served


@pytest.mark.parametrize(
    ("body", "code", "status"),
    [
        (b"{not json", "invalid_request", "400"),
        (b'{"query": 42, "top_k": "many"}', "invalid_request", "400"),
        (b'{"query": "caf\xe9"}', "invalid_request", "400"),
        (b"", "invalid_request", "400"),
        (json.dumps({"query": "x" * 9000}).encode(), "too_large", "413"),
    ],
    ids=["bad-json", "wrong-types", "not-utf8", "empty", "too-large"],
)
async def test_malformed_request_gets_error_shape_and_service_keeps_serving(
    nats_client: NATS, body: bytes, code: str, status: str
) -> None:
    calls: list[ChatRequest] = []

    async def handler(request: ChatRequest) -> ChatResponse:
        calls.append(request)
        return await echo(request)

    async with RequestServer(nats_client, SUBJECT, handler, ChatRequest):
        reply = await nats_client.request(SUBJECT, body, timeout=5)
        assert reply.headers is not None
        assert reply.headers[ERROR_CODE] == status
        assert reply.headers[ERROR]
        error = json.loads(reply.data)["error"]
        assert error["code"] == code
        assert error["message"]
        assert calls == []  # a bad request never reaches the handler

        assert (await ask(nats_client, "still there?")).response == "echo: still there?"


async def test_typed_request_raises_for_invalid_request(nats_client: NATS) -> None:
    async with RequestServer(nats_client, SUBJECT, echo, ChatRequest):
        payload = ChatRequest.model_construct(query="x", top_k=1, top_n=9)  # skips validation
        with pytest.raises(InvalidRequestError, match="top_n"):
            await request(nats_client, SUBJECT, payload, ChatResponse, timeout=5)
        payload = ChatRequest.model_construct(query="x" * 9000)
        with pytest.raises(TooLargeError):
            await request(nats_client, SUBJECT, payload, ChatResponse, timeout=5)


async def test_handler_exception_is_internal_and_logged_with_request_id(
    nats_client: NATS, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="handler_base.messaging.serving")
    async with RequestServer(nats_client, SUBJECT, echo, ChatRequest):
        raw = await nats_client.request(
            SUBJECT, ChatRequest(query="boom", request_id="req-42").model_dump_json().encode(), 5
        )
        assert raw.headers is not None
        assert raw.headers[ERROR_CODE] == "500"
        error = json.loads(raw.data)["error"]
        assert error["code"] == "internal"
        assert "req-42" in error["message"]
        assert "fell over" not in error["message"]  # internals stay in the log

        assert (await ask(nats_client, "next")).response == "echo: next"

    failures = [r for r in caplog.records if "req-42" in r.getMessage()]
    assert failures
    assert failures[0].exc_info is not None


async def test_handler_exception_without_request_id_gets_one(
    nats_client: NATS, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="handler_base.messaging.serving")
    async with RequestServer(nats_client, SUBJECT, echo, ChatRequest):
        raw = await nats_client.request(SUBJECT, b'{"query": "boom"}', timeout=5)
    request_id = json.loads(raw.data)["error"]["message"].rsplit(" ", 1)[-1]
    assert any(request_id in r.getMessage() for r in caplog.records)


async def test_request_id_header_is_used_when_the_body_has_none(
    nats_client: NATS, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="handler_base.messaging.serving")
    async with RequestServer(nats_client, SUBJECT, echo, ChatRequest):
        raw = await nats_client.request(
            SUBJECT, b'{"query": "boom"}', timeout=5, headers={"X-Request-Id": "hdr-7"}
        )
    assert "hdr-7" in json.loads(raw.data)["error"]["message"]
    assert any("hdr-7" in r.getMessage() for r in caplog.records)


async def test_platform_error_keeps_its_code(nats_client: NATS) -> None:
    async with RequestServer(nats_client, SUBJECT, echo, ChatRequest):
        with pytest.raises(NotFoundError, match="no collection named 'docs'"):
            await ask(nats_client, "missing", collection="docs")
        raw = await nats_client.request(SUBJECT, b'{"query": "missing"}', timeout=5)
        assert raw.headers is not None
        assert raw.headers[ERROR_CODE] == "404"


async def test_no_responders_is_unavailable(nats_client: NATS) -> None:
    with pytest.raises(UnavailableError, match="no service"):
        await ask(nats_client, "anyone?")


async def test_slow_handler_times_out(nats_client: NATS) -> None:
    release = asyncio.Event()

    async def slow(request: ChatRequest) -> ChatResponse:
        await release.wait()
        return ChatResponse(response="late")

    async with RequestServer(nats_client, SUBJECT, slow, ChatRequest):
        with pytest.raises(RequestTimeoutError):
            await request(nats_client, SUBJECT, ChatRequest(query="q"), ChatResponse, 0.2)
        release.set()


async def test_message_without_reply_subject_is_dropped_and_logged(
    nats_client: NATS, caplog: pytest.LogCaptureFixture, eventually: Any
) -> None:
    caplog.set_level(logging.WARNING, logger="handler_base.messaging.serving")
    calls: list[ChatRequest] = []

    async def handler(request: ChatRequest) -> ChatResponse:
        calls.append(request)
        return ChatResponse(response="ok")

    async with RequestServer(nats_client, SUBJECT, handler, ChatRequest):
        await nats_client.publish(SUBJECT, b'{"query": "fire and forget"}')
        await eventually(
            lambda: any("no reply subject" in r.getMessage() for r in caplog.records),
            what="the drop to be logged",
        )
        assert calls == []
        assert (await ask(nats_client, "q")).response == "ok"


async def test_in_flight_is_bounded_and_requests_run_concurrently(
    nats_client: NATS, eventually: Any
) -> None:
    release = asyncio.Event()
    started: list[str] = []

    async def blocking(request: ChatRequest) -> ChatResponse:
        started.append(request.query)
        await release.wait()
        return ChatResponse(response=request.query)

    async with RequestServer(nats_client, SUBJECT, blocking, ChatRequest, max_in_flight=2) as srv:
        pending = [asyncio.create_task(ask(nats_client, f"q{i}")) for i in range(5)]
        await eventually(lambda: len(started) == 2, what="two handlers to start")
        await flush(nats_client)  # every request has reached the server by now
        await asyncio.sleep(0.05)  # give a (wrong) third handler a chance to start
        assert len(started) == 2
        assert srv.in_flight == 2
        release.set()
        replies = await asyncio.gather(*pending)
    assert sorted(r.response for r in replies) == [f"q{i}" for i in range(5)]


async def test_drain_answers_requests_in_flight(nats_connect: NatsConnect, eventually: Any) -> None:
    server_nc, client = await nats_connect(), await nats_connect()
    release = asyncio.Event()
    started = asyncio.Event()

    async def blocking(request: ChatRequest) -> ChatResponse:
        started.set()
        await release.wait()
        return ChatResponse(response="finished")

    srv = await serve(server_nc, SUBJECT, blocking, ChatRequest)
    in_flight = asyncio.create_task(ask(client, "q"))
    await asyncio.wait_for(started.wait(), 5)
    draining = asyncio.create_task(srv.drain(timeout=5))
    await asyncio.sleep(0)
    release.set()
    await draining
    assert (await in_flight).response == "finished"
    assert not srv.is_serving
    with pytest.raises(UnavailableError):
        await ask(client, "after drain")


async def test_drain_timeout_answers_unavailable(nats_connect: NatsConnect) -> None:
    server_nc, client = await nats_connect(), await nats_connect()
    started = asyncio.Event()

    async def stuck(request: ChatRequest) -> ChatResponse:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    srv = await serve(server_nc, SUBJECT, stuck, ChatRequest)
    in_flight = asyncio.create_task(ask(client, "q"))
    await asyncio.wait_for(started.wait(), 5)
    await srv.drain(timeout=0.1)
    with pytest.raises(UnavailableError, match="shutting down"):
        await in_flight


async def test_subscription_survives_server_restart(
    nats_server: NatsServer, nats_connect: NatsConnect, eventually: Any
) -> None:
    server_nc, client = await nats_connect(), await nats_connect()
    async with RequestServer(server_nc, SUBJECT, echo, ChatRequest):
        assert (await ask(client, "before")).response == "echo: before"

        nats_server.restart()
        await eventually(
            lambda: all(
                nc.is_connected and nc.stats["reconnects"] >= 1 for nc in (server_nc, client)
            ),
            what="both clients to reconnect",
        )
        await flush(server_nc)  # the replayed subscription has reached the server

        assert (await ask(client, "after")).response == "echo: after"


async def test_trace_context_is_carried(
    nats_connect: NatsConnect,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    eventually: Any,
) -> None:
    server_nc, client = await nats_connect(), await nats_connect()
    seen_in_handler = []

    async def handler(request: ChatRequest) -> ChatResponse:
        seen_in_handler.append(get_current_span().get_span_context())
        return ChatResponse(response="traced")

    tracer = tracer_provider.get_tracer("test")
    async with RequestServer(server_nc, SUBJECT, handler, ChatRequest):
        with tracer.start_as_current_span("caller") as caller:
            await ask(client, "q")

    def spans(kind: SpanKind) -> list[Any]:
        return [s for s in span_exporter.get_finished_spans() if s.kind is kind]

    await eventually(lambda: spans(SpanKind.SERVER), what="the server span to end")
    (client_span,) = spans(SpanKind.CLIENT)
    (server_span,) = spans(SpanKind.SERVER)
    trace_id = caller.get_span_context().trace_id
    assert client_span.context.trace_id == server_span.context.trace_id == trace_id
    assert client_span.parent.span_id == caller.get_span_context().span_id
    assert server_span.parent.span_id == client_span.context.span_id
    assert server_span.parent.is_remote
    assert seen_in_handler == [server_span.context]  # the handler runs inside the span
    assert server_span.attributes["messaging.destination.name"] == SUBJECT


async def test_error_reply_marks_server_span(
    nats_client: NATS, span_exporter: InMemorySpanExporter, eventually: Any
) -> None:
    async with RequestServer(nats_client, SUBJECT, echo, ChatRequest):
        await nats_client.request(SUBJECT, b'{"query": "boom"}', timeout=5)

    def server_spans() -> list[Any]:
        return [s for s in span_exporter.get_finished_spans() if s.kind is SpanKind.SERVER]

    await eventually(server_spans, what="the server span")
    (span,) = server_spans()
    assert span.attributes["error.type"] == "internal"
    assert not span.status.is_ok
