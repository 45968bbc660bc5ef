"""The bridge's own rules against a real nats-server, without Ray.

The handler behind each route here is a small async function, so that the bridge's
limits, deadlines and at-least-once bookkeeping can be driven exactly; the real chat and
voice handlers behind the bridge are tested in ``test_bridge_ray.py``. The dead-letter
test uses the real ChatClient against a chat service that is not there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from pydantic import ValidationError

from handler_base.clients import ChatClient
from handler_base.errors import (
    InvalidRequestError,
    RequestTimeoutError,
    UnavailableError,
)
from handler_base.messages import ChatRequest, ChatResponse
from handler_base.messaging import (
    REPLY_TO_HEADER,
    TIMEOUT_HEADER,
    decode_reply,
    flush,
    request,
    request_durably,
)
from handler_base.messaging.jetstream import DEAD_LETTER_REASON_HEADER
from handler_base.settings import Settings
from pipeline_bridge import Bridge, BridgeConfig, Route

pytestmark = pytest.mark.integration

SUBJECT = "ai.chat.request"


class Answerer:
    """A route's handler: answers ``query`` back, after ``delay_s``; counts its calls."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls: list[str] = []
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, request: ChatRequest) -> ChatResponse:
        self.calls.append(request.query)
        await self.release.wait()
        await asyncio.sleep(self.delay_s)
        return ChatResponse(
            response=f"answer {len(self.calls)} to {request.query}",
            sources=[],
            request_id=request.request_id,
        )


@pytest_asyncio.fixture
async def make_bridge(
    nats_settings: Settings,
) -> AsyncIterator[Callable[..., Any]]:
    bridges: list[Bridge] = []

    async def make(handler: Any, **config: Any) -> Bridge:
        bridge = Bridge(
            BridgeConfig(**config),
            nats_settings,
            routes=[Route("chat", SUBJECT, ChatRequest, handler)],
        )
        await bridge.start()
        bridges.append(bridge)
        return bridge

    yield make
    for bridge in bridges:
        await bridge.stop()


async def raw_request(nc: NATS, data: bytes, headers: dict[str, str] | None = None) -> Msg:
    return await nc.request(SUBJECT, data, timeout=10, headers=headers)


def test_config_defaults_come_from_settings() -> None:
    settings = Settings(nats_chat_subject="x.chat", nats_request_timeout_s=7)
    config = BridgeConfig.from_settings(settings, max_in_flight=2)
    assert (config.chat_subject, config.voice_subject) == ("x.chat", "voice.request")
    assert config.deadline_s == 7
    assert config.max_in_flight == 2
    with pytest.raises(ValidationError):
        BridgeConfig(chat_subject="same", voice_subject="same")
    with pytest.raises(ValidationError):
        BridgeConfig(mode="exactly_once")


async def test_malformed_requests_get_errors_and_good_ones_keep_flowing(
    make_bridge: Callable[..., Any], nats_client: NATS
) -> None:
    answerer = Answerer()
    await make_bridge(answerer)
    for bad in (b"{not json", b'{"query": 42}', b'{"query": ""}', b"\xff\xfe", b"[]"):
        reply = await raw_request(nats_client, bad)
        with pytest.raises(InvalidRequestError):
            decode_reply(reply.data, reply.headers, ChatResponse)
        assert reply.headers is not None
        assert reply.headers["Nats-Service-Error-Code"] == "400"
        good = ChatRequest(query="still there?")
        answer = await request(nats_client, SUBJECT, good, ChatResponse)
        assert answer.response.endswith("still there?")
    assert answerer.calls == ["still there?"] * 5


async def test_past_its_deadline_a_request_is_answered_timeout(
    make_bridge: Callable[..., Any], nats_client: NATS
) -> None:
    await make_bridge(Answerer(delay_s=5.0), deadline_s=30)
    with pytest.raises(RequestTimeoutError, match="deadline"):
        await request(
            nats_client,
            SUBJECT,
            ChatRequest(query="slow"),
            ChatResponse,
            timeout=10,
            headers={TIMEOUT_HEADER: "0.5"},
        )


async def test_over_the_limit_a_request_is_refused_at_once(
    make_bridge: Callable[..., Any], nats_client: NATS
) -> None:
    answerer = Answerer()
    answerer.release.clear()
    bridge = await make_bridge(answerer, max_in_flight=1, max_waiting=1)
    held = [
        asyncio.create_task(
            request(nats_client, SUBJECT, ChatRequest(query=f"q{i}"), ChatResponse, timeout=20)
        )
        for i in range(2)
    ]
    for _ in range(500):  # one in the handler, one waiting for its slot
        if len(answerer.calls) == 1 and bridge.admitted == 2:
            break
        await asyncio.sleep(0.01)
    assert (len(answerer.calls), bridge.admitted) == (1, 2)
    with pytest.raises(UnavailableError, match="busy"):
        await request(nats_client, SUBJECT, ChatRequest(query="one too many"), ChatResponse)
    answerer.release.set()
    answers = await asyncio.gather(*held)
    assert sorted(a.response.split()[-1] for a in answers) == ["q0", "q1"]


async def test_two_bridges_in_a_queue_group_share_the_work(
    make_bridge: Callable[..., Any], nats_client: NATS
) -> None:
    first, second = Answerer(delay_s=0.05), Answerer(delay_s=0.05)
    await make_bridge(first)
    await make_bridge(second)
    await asyncio.gather(
        *(
            request(nats_client, SUBJECT, ChatRequest(query=f"q{i}"), ChatResponse)
            for i in range(40)
        )
    )
    assert len(first.calls) + len(second.calls) == 40
    assert first.calls
    assert second.calls


async def test_at_least_once_a_repeat_gets_the_same_reply_and_one_handler_call(
    make_bridge: Callable[..., Any], nats_client: NATS
) -> None:
    answerer = Answerer()
    await make_bridge(answerer, mode="at_least_once", ack_wait_s=5)
    question = ChatRequest(query="once?", request_id="req-1")
    first = await request_durably(nats_client, SUBJECT, question, ChatResponse, timeout=10)
    again = await request_durably(nats_client, SUBJECT, question, ChatResponse, timeout=10)
    assert first == again
    assert first.response == "answer 1 to once?"
    other = await request_durably(
        nats_client, SUBJECT, ChatRequest(query="once?", request_id="req-2"), ChatResponse
    )
    assert other.response == "answer 2 to once?"
    assert answerer.calls == ["once?", "once?"]


async def test_at_least_once_repeats_sent_together_are_handled_once(
    make_bridge: Callable[..., Any], nats_client: NATS
) -> None:
    answerer = Answerer(delay_s=0.5)
    await make_bridge(answerer, mode="at_least_once", ack_wait_s=5)
    question = ChatRequest(query="together", request_id="req-together")
    replies = await asyncio.gather(
        *(request_durably(nats_client, SUBJECT, question, ChatResponse) for _ in range(3))
    )
    assert replies[0] == replies[1] == replies[2]
    assert answerer.calls == ["together"]


async def test_at_least_once_malformed_and_unanswerable_messages(
    make_bridge: Callable[..., Any], nats_client: NATS
) -> None:
    answerer = Answerer()
    await make_bridge(answerer, mode="at_least_once", ack_wait_s=5)
    js = nats_client.jetstream()
    inbox = nats_client.new_inbox()
    sub = await nats_client.subscribe(inbox)
    await flush(nats_client)
    await js.publish(SUBJECT, b'{"query": 42}', headers={REPLY_TO_HEADER: inbox})
    reply = await sub.next_msg(timeout=10)
    with pytest.raises(InvalidRequestError):
        decode_reply(reply.data, reply.headers, ChatResponse)
    # No Reply-To: stored, but nobody to answer; the next good request is still served.
    await js.publish(SUBJECT, ChatRequest(query="to nobody").model_dump_json().encode())
    answer = await request_durably(nats_client, SUBJECT, ChatRequest(query="ok"), ChatResponse)
    assert answer.response.endswith("ok")
    assert "to nobody" not in answerer.calls


async def test_a_request_that_fails_every_delivery_is_answered_and_dead_lettered(
    make_bridge: Callable[..., Any], nats_client: NATS, nats_settings: Settings
) -> None:
    # The real chat client, over HTTP to a port where nothing listens: unavailable.
    settings = nats_settings.model_copy(update={"http_retries": 0})
    chat = ChatClient(settings, mode="http", base_url="http://127.0.0.1:9/chat")
    dead = await nats_client.subscribe("ai.requests.dead_letter")
    await flush(nats_client)
    try:
        await make_bridge(chat.chat, mode="at_least_once", ack_wait_s=5, max_deliver=2)
        with pytest.raises(UnavailableError):
            await request_durably(
                nats_client, SUBJECT, ChatRequest(query="anyone?"), ChatResponse, timeout=30
            )
        letter = await dead.next_msg(timeout=30)
    finally:
        await chat.aclose()
    assert letter.headers is not None
    assert letter.headers[DEAD_LETTER_REASON_HEADER] == "max_deliveries"
    assert ChatRequest.model_validate_json(letter.data).query == "anyone?"


async def test_at_least_once_work_longer_than_the_ack_wait_is_handled_once(
    make_bridge: Callable[..., Any], nats_client: NATS
) -> None:
    answerer = Answerer(delay_s=4.0)
    await make_bridge(answerer, mode="at_least_once", ack_wait_s=1)
    inbox = nats_client.new_inbox()
    replies = await nats_client.subscribe(inbox)
    await flush(nats_client)
    body = ChatRequest(query="slow").model_dump_json().encode()
    await nats_client.jetstream().publish(SUBJECT, body, headers={REPLY_TO_HEADER: inbox})
    await replies.next_msg(timeout=30)
    with pytest.raises(TimeoutError):
        await replies.next_msg(timeout=4)
    assert answerer.calls == ["slow"]


async def test_at_least_once_a_redelivery_while_the_bridge_was_stuck_is_not_answered_again(
    make_bridge: Callable[..., Any], nats_client: NATS
) -> None:
    calls: list[str] = []

    async def stuck(request: ChatRequest) -> ChatResponse:
        calls.append(request.query)
        time.sleep(2.5)  # noqa: ASYNC251 (blocks the loop past the ack wait, on purpose)
        return ChatResponse(response="late", sources=[])

    await make_bridge(stuck, mode="at_least_once", ack_wait_s=1)
    inbox = nats_client.new_inbox()
    replies = await nats_client.subscribe(inbox)
    await flush(nats_client)
    body = ChatRequest(query="stuck").model_dump_json().encode()
    await nats_client.jetstream().publish(SUBJECT, body, headers={REPLY_TO_HEADER: inbox})
    first = await replies.next_msg(timeout=30)
    assert ChatResponse.model_validate_json(first.data).response == "late"
    with pytest.raises(TimeoutError):
        await replies.next_msg(timeout=4)
    assert calls == ["stuck"]
