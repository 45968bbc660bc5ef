"""Property-based tests of the NATS serving helper on a real nats-server.

One :class:`RequestServer` (ChatRequest in, ChatResponse out) serves the whole module.
Hypothesis sends it batches of requests: arbitrary bytes, JSON of wrong shapes, valid
requests, strings far over the field limits (but under the server's payload limit), with
arbitrary headers among the ones the platform reads. Every request must get exactly one
reply, the one its payload calls for (the echo, or the Error shape with the
``Nats-Service-Error`` headers), and a good request must still be answered after each
batch.

The server and the clients live on an event loop in a thread of their own, so that the
sync hypothesis tests can drive them across examples.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER

from handler_base.errors import HTTP_STATUS, ErrorCode, ErrorReply, NotFoundError, PlatformError
from handler_base.messages import MAX_QUERY_CHARS, ChatRequest, ChatResponse
from handler_base.messaging import (
    REPLY_TO_HEADER,
    REQUEST_ID_HEADER,
    TIMEOUT_HEADER,
    RequestServer,
    connect,
    decode_model,
)
from handler_base.testing.nats import NatsServer
from handler_base.testing.nats_fixtures import nats_test_settings

pytestmark = pytest.mark.integration

SUBJECT = "fuzz.chat.request"
REPLY_WITHIN_S = 10.0
SECOND_REPLY_WINDOW_S = 0.2
"""How long each batch waits for a reply that should not come."""
MAX_PAYLOAD_MARGIN = 32 * 1024
"""Room left under the server's payload limit for the headers and the JSON around a field."""

T = TypeVar("T")


async def echo(request: ChatRequest) -> ChatResponse:
    """Echo the query; ``boom`` fails inside the handler, ``missing`` is not found."""
    if request.query == "boom":
        raise RuntimeError("the model fell over")
    if request.query == "missing":
        raise NotFoundError(f"no collection named {request.collection!r}")
    return ChatResponse(response=f"echo: {request.query}", request_id=request.request_id)


def expected_reply(payload: bytes) -> ChatResponse | tuple[ErrorCode, int]:
    """What the server must answer to ``payload``: the echo, or an error's code and status."""
    try:
        request = decode_model(payload, ChatRequest)
    except PlatformError as error:
        return error.code, error.http_status
    if request.query == "boom":
        return ErrorCode.INTERNAL, HTTP_STATUS[ErrorCode.INTERNAL]
    if request.query == "missing":
        return ErrorCode.NOT_FOUND, HTTP_STATUS[ErrorCode.NOT_FOUND]
    return ChatResponse(response=f"echo: {request.query}", request_id=request.request_id)


@dataclass
class Served:
    """The module's server, its client, and the thread whose loop runs them."""

    loop: asyncio.AbstractEventLoop
    client: NATS
    max_payload: int

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="serving-fuzz", daemon=True)
    thread.start()

    def run(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(60)

    with NatsServer(jetstream=False) as nats_server:
        settings_ = nats_test_settings(nats_server.url)
        server_nc = run(connect(settings_, connect_wait_s=10.0))
        client = run(connect(settings_, connect_wait_s=10.0))
        server = RequestServer(server_nc, SUBJECT, echo, ChatRequest)
        run(server.start())
        try:
            yield Served(loop=loop, client=client, max_payload=client.max_payload)
        finally:
            run(server.drain(timeout=5))
            run(client.close())
            run(server_nc.close())
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


# --- what is sent ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
good_requests = st.builds(
    lambda query, request_id: (
        ChatRequest(query=query, request_id=request_id).model_dump_json().encode()
    ),
    st.one_of(
        st.text(min_size=1, max_size=50).filter(str.strip), st.sampled_from(["boom", "missing"])
    ),
    st.none() | st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True),
)
wrong_shapes = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(
        st.sampled_from(["query", "top_k", "top_n", "history", "collection", "request_id", "x"]),
        json_values,
        max_size=4,
    ).map(lambda d: json.dumps(d).encode()),
)


def huge_strings(max_payload: int) -> st.SearchStrategy[bytes]:
    """Fields far over their limits, the whole message still under ``max_payload``."""
    size = st.integers(MAX_QUERY_CHARS - 2, max_payload - MAX_PAYLOAD_MARGIN)
    return st.one_of(
        size.map(lambda n: json.dumps({"query": "q" * n}).encode()),
        size.map(lambda n: json.dumps({"query": "q", "filter": "f" * n}).encode()),
        size.map(lambda n: json.dumps({"query": "q", "request_id": "r" * n}).encode()),
        size.map(lambda n: b'{"query": "' + b"\xff" * (n // 2) + b'"}'),
        size.map(lambda n: b"[" * n),
    )


header_names = st.one_of(
    st.sampled_from(
        [
            REQUEST_ID_HEADER,
            TIMEOUT_HEADER,
            REPLY_TO_HEADER,
            "traceparent",
            "tracestate",
            "baggage",
            ERROR_HEADER,
            ERROR_CODE_HEADER,
            "Nats-Msg-Id",
            "Status",
        ]
    ),
    st.from_regex(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,24}", fullmatch=True),
)
header_values = st.one_of(
    st.text(max_size=60),
    st.sampled_from(
        [
            "",
            "0",
            "-1",
            "nan",
            "inf",
            "1e400",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-0000000000000000-01",
            "_INBOX.nowhere",
        ]
    ),
    st.integers(0, 4000).map(lambda n: "h" * n),
)
headers = st.none() | st.dictionaries(header_names, header_values, max_size=5)


def requests_of(max_payload: int) -> st.SearchStrategy[tuple[bytes, dict[str, str] | None]]:
    payloads = st.one_of(
        st.binary(max_size=300), wrong_shapes, good_requests, huge_strings(max_payload)
    )
    return st.tuples(payloads, headers)


# --- one batch ------------------------------------------------------------------------------


async def send_batch(
    nc: NATS, batch: list[tuple[bytes, dict[str, str] | None]], unanswerable: int
) -> list[list[Msg]]:
    """Send every request to its own inbox; wait for a reply each, then for strays.

    ``unanswerable`` more messages go out without a reply subject first: the server must
    drop them and go on.
    """
    for _ in range(unanswerable):
        await nc.publish(SUBJECT, b'{"query": "no reply subject"}')
    replies: list[list[Msg]] = [[] for _ in batch]
    arrived = [asyncio.Event() for _ in batch]
    subs = []
    for index in range(len(batch)):

        async def collect(msg: Msg, index: int = index) -> None:
            replies[index].append(msg)
            arrived[index].set()

        subs.append(await nc.subscribe(nc.new_inbox(), cb=collect))
    await nc.flush()
    for sub, (payload, message_headers) in zip(subs, batch, strict=True):
        await nc.publish(SUBJECT, payload, reply=sub.subject, headers=message_headers)
    await nc.flush()
    try:
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in arrived)), REPLY_WITHIN_S)
    except TimeoutError:
        unanswered = [i for i, got in enumerate(replies) if not got]
        pytest.fail(f"requests {unanswered} of the batch got no reply within {REPLY_WITHIN_S} s")
    await asyncio.sleep(SECOND_REPLY_WINDOW_S)
    for sub in subs:
        await sub.unsubscribe()
    return replies


def check_reply(payload: bytes, replies: list[Msg]) -> None:
    assert len(replies) == 1, f"{len(replies)} replies to one request"
    reply = replies[0]
    expected = expected_reply(payload)
    if isinstance(expected, ChatResponse):
        assert not (reply.headers or {}).get(ERROR_CODE_HEADER), reply.headers
        assert ChatResponse.model_validate_json(reply.data) == expected
        return
    code, status = expected
    assert reply.headers is not None, "an error reply carries the service error headers"
    assert reply.headers[ERROR_CODE_HEADER] == str(status)
    assert reply.headers[ERROR_HEADER]
    error = ErrorReply.model_validate_json(reply.data).error
    assert error.code is code
    assert error.message


def ask_a_good_question(served: Served) -> None:
    async def ask() -> Msg:
        return await served.client.request(SUBJECT, b'{"query": "still there?"}', timeout=5)

    reply = served.run(ask())
    assert ChatResponse.model_validate_json(reply.data).response == "echo: still there?"


# --- properties -----------------------------------------------------------------------------

FUZZ = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(data=st.data())
def test_every_request_gets_exactly_one_fitting_reply(served: Served, data: st.DataObject) -> None:
    batch = data.draw(st.lists(requests_of(served.max_payload), min_size=1, max_size=6))
    unanswerable = data.draw(st.integers(0, 2))
    replies = served.run(send_batch(served.client, batch, unanswerable))
    for (payload, _), got in zip(batch, replies, strict=True):
        check_reply(payload, got)
    ask_a_good_question(served)


@settings(max_examples=15, deadline=None)
@given(message_headers=st.dictionaries(header_names, header_values, min_size=1, max_size=8))
def test_any_headers_on_a_good_request_change_nothing_but_the_trace(
    served: Served, message_headers: dict[str, str]
) -> None:
    payload = b'{"query": "hello", "request_id": "h-1"}'
    (got,) = served.run(send_batch(served.client, [(payload, message_headers)], 0))
    check_reply(payload, got)


def test_a_payload_just_under_the_server_limit_is_answered(served: Served) -> None:
    # The JSON text is as long as the server lets it be; the query inside is over its limit.
    filler = served.max_payload - len(b'{"query": ""}')
    payload = b'{"query": "' + b"q" * filler + b'"}'
    assert len(payload) == served.max_payload
    (got,) = served.run(send_batch(served.client, [(payload, None)], 0))
    check_reply(payload, got)
    ask_a_good_question(served)
