"""JetStream against a real nats-server: streams, dedup, redelivery, term, dead letters."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import ValidationError

from handler_base.errors import UnavailableError
from handler_base.messages import ChatRequest
from handler_base.messaging import (
    ConsumerSpec,
    DeadLetterForwarder,
    Delivery,
    DurableConsumer,
    Reject,
    Retry,
    ensure_stream,
    flush,
    publish_once,
)
from handler_base.testing.nats import NatsServer
from handler_base.testing.nats_fixtures import NatsConnect

pytestmark = pytest.mark.integration

STREAM = "JOBS"
DLQ = "dead.jobs"


@pytest_asyncio.fixture
async def js(nats_client: NATS) -> JetStreamContext:
    js = nats_client.jetstream()
    await ensure_stream(js, STREAM, ["jobs.>"], duplicate_window_s=60)
    return js


def spec(**overrides: Any) -> ConsumerSpec:
    values: dict[str, Any] = {
        "stream": STREAM,
        "durable": "worker",
        "filter_subjects": ["jobs.>"],
        "ack_wait_s": 5.0,
        "max_deliver": 3,
        "retry_initial_s": 0.01,
        "retry_max_s": 0.05,
        "fetch_timeout_s": 1.0,
        "drain_timeout_s": 5.0,
    }
    values.update(overrides)
    return ConsumerSpec(**values)


Handler = Callable[[Delivery], Awaitable[None]]


@pytest_asyncio.fixture
async def run_consumer(nats_client: NATS) -> AsyncIterator[Callable[..., DurableConsumer]]:
    """Start DurableConsumers in the background; all are stopped after the test."""
    started: list[DurableConsumer] = []

    def start(handler: Handler, **overrides: Any) -> DurableConsumer:
        consumer = DurableConsumer(nats_client, spec(**overrides))
        consumer.start(handler)
        started.append(consumer)
        return consumer

    yield start
    for consumer in started:
        await consumer.stop()


@pytest_asyncio.fixture
async def dead_letters(nats_client: NATS) -> AsyncIterator[asyncio.Queue[Msg]]:
    """What arrives on the dead-letter subject."""
    queue: asyncio.Queue[Msg] = asyncio.Queue()
    sub = await nats_client.subscribe(DLQ, cb=queue.put)
    await flush(nats_client)
    yield queue
    await sub.unsubscribe()


# --- streams and publishing ---------------------------------------------------------


async def test_ensure_stream_creates_then_leaves_alone_then_updates(
    nats_client: NATS, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="handler_base.messaging.jetstream")
    js = nats_client.jetstream()
    created = await ensure_stream(js, "S1", ["a.>", "b.>"], duplicate_window_s=30)
    assert created.config.duplicate_window == 30
    assert "created stream S1" in caplog.text

    caplog.clear()
    same = await ensure_stream(js, "S1", ["b.>", "a.>"], duplicate_window_s=30)
    assert same.config.subjects == created.config.subjects
    assert "updated" not in caplog.text

    updated = await ensure_stream(js, "S1", ["a.>", "b.>", "c.>"], max_age_s=3600)
    assert sorted(updated.config.subjects or []) == ["a.>", "b.>", "c.>"]
    assert updated.config.max_age == 3600
    assert updated.config.duplicate_window == 120  # back to the default
    assert "updated stream S1" in caplog.text


async def test_publish_once_stores_a_repeat_once(js: JetStreamContext) -> None:
    first = await publish_once(js, "jobs.a", b"payload", "job-1")
    repeat = await publish_once(js, "jobs.a", b"payload", "job-1")
    other = await publish_once(js, "jobs.a", ChatRequest(query="q"), "job-2")
    assert not first.duplicate
    assert repeat.duplicate
    assert repeat.seq == first.seq
    assert other.seq == first.seq + 1
    info = await js.stream_info(STREAM)
    assert info.state.messages == 2


async def test_publish_without_a_stream_is_unavailable(js: JetStreamContext) -> None:
    with pytest.raises(UnavailableError, match="no JetStream stream"):
        await publish_once(js, "nowhere.a", b"x", "id-1")


# --- consuming ----------------------------------------------------------------------


async def test_ack_on_success(js: JetStreamContext, run_consumer: Any) -> None:
    seen: asyncio.Queue[tuple[str, bytes, int, str | None]] = asyncio.Queue()

    async def handler(delivery: Delivery) -> None:
        await seen.put((delivery.subject, delivery.data, delivery.num_delivered, delivery.msg_id))

    consumer = run_consumer(handler)
    await publish_once(js, "jobs.a", b"one", "m-1")
    assert await asyncio.wait_for(seen.get(), 5) == ("jobs.a", b"one", 1, "m-1")
    await consumer.stop()
    info = await js.consumer_info(STREAM, "worker")
    assert info.num_ack_pending == 0
    assert info.num_redelivered == 0


async def test_redelivery_after_nak(js: JetStreamContext, run_consumer: Any) -> None:
    deliveries: list[int] = []
    done = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        deliveries.append(delivery.num_delivered)
        if delivery.num_delivered == 1:
            raise Retry("not yet", delay_s=0.1)
        done.set()

    run_consumer(handler)
    await publish_once(js, "jobs.a", b"retry me", "m-1")
    await asyncio.wait_for(done.wait(), 5)
    assert deliveries == [1, 2]


async def test_handler_exception_is_redelivered_with_backoff(
    js: JetStreamContext, run_consumer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="handler_base.messaging.jetstream")
    deliveries: list[int] = []
    done = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        deliveries.append(delivery.num_delivered)
        if delivery.num_delivered < 3:
            raise RuntimeError("flaky dependency")
        done.set()

    run_consumer(handler)
    await publish_once(js, "jobs.a", b"x", "m-1")
    await asyncio.wait_for(done.wait(), 5)
    assert deliveries == [1, 2, 3]
    assert "flaky dependency" in caplog.text


async def test_term_stops_redelivery_and_dead_letters_with_the_reason(
    nats_client: NATS,
    js: JetStreamContext,
    run_consumer: Any,
    dead_letters: asyncio.Queue[Msg],
    eventually: Any,
) -> None:
    seen: list[tuple[bytes, int]] = []

    async def handler(delivery: Delivery) -> None:
        seen.append((delivery.data, delivery.num_delivered))
        if delivery.data == b"poison":
            raise Reject("cannot parse this\nat all")

    async with DeadLetterForwarder(nats_client, STREAM, "worker", DLQ):
        run_consumer(handler, ack_wait_s=0.5)
        ack = await publish_once(js, "jobs.a", b"poison", "m-1", headers={"Trace-Me": "yes"})
        dead = await asyncio.wait_for(dead_letters.get(), 5)

    assert dead.data == b"poison"
    assert dead.headers is not None
    assert dead.headers["Dead-Letter-Reason"] == "terminated"
    assert dead.headers["Dead-Letter-Detail"] == "cannot parse this at all"
    assert dead.headers["Dead-Letter-Sequence"] == str(ack.seq)
    assert dead.headers["Dead-Letter-Subject"] == "jobs.a"
    assert dead.headers["Trace-Me"] == "yes"
    assert "Nats-Msg-Id" not in dead.headers

    info = await js.consumer_info(STREAM, "worker")
    assert info.num_ack_pending == 0  # nothing left for the server to redeliver
    await publish_once(js, "jobs.a", b"fine", "m-2")
    await eventually(lambda: (b"fine", 1) in seen, what="the next message")
    assert seen.count((b"poison", 1)) == 1
    assert (b"poison", 2) not in seen


async def test_dead_letter_after_max_deliveries(
    nats_client: NATS,
    js: JetStreamContext,
    run_consumer: Any,
    dead_letters: asyncio.Queue[Msg],
) -> None:
    deliveries: list[int] = []

    async def always_fails(delivery: Delivery) -> None:
        deliveries.append(delivery.num_delivered)
        raise Retry("downstream is down", delay_s=0)

    async with DeadLetterForwarder(nats_client, STREAM, "worker", DLQ):
        run_consumer(always_fails, max_deliver=3)
        ack = await publish_once(js, "jobs.build", b'{"job": 7}', "job-7")
        dead = await asyncio.wait_for(dead_letters.get(), 5)

    assert deliveries == [1, 2, 3]
    assert dead.data == b'{"job": 7}'
    # The dead-letter headers (a trace context may come along when tracing is on).
    assert {k: v for k, v in (dead.headers or {}).items() if k.startswith("Dead-Letter-")} == {
        "Dead-Letter-Reason": "max_deliveries",
        "Dead-Letter-Subject": "jobs.build",
        "Dead-Letter-Stream": STREAM,
        "Dead-Letter-Consumer": "worker",
        "Dead-Letter-Sequence": str(ack.seq),
        "Dead-Letter-Deliveries": "3",
    }


async def test_dead_letters_into_a_stream_are_stored_once(
    nats_client: NATS, js: JetStreamContext
) -> None:
    await ensure_stream(js, "DEAD", [DLQ])
    ack = await publish_once(js, "jobs.a", b"lost", "m-1")
    forwarder = DeadLetterForwarder(nats_client, STREAM, "worker", DLQ)
    for _ in range(2):  # e.g. two forwarders saw the same advisory
        await forwarder.forward(ack.seq, consumer="worker", deliveries=5, reason="max_deliveries")
    info = await js.stream_info("DEAD")
    assert info.state.messages == 1
    stored = await js.get_msg("DEAD", 1)
    assert stored.data == b"lost"
    assert stored.headers is not None
    assert stored.headers["Dead-Letter-Deliveries"] == "5"


async def test_decode_rejects_an_invalid_payload(
    nats_client: NATS,
    js: JetStreamContext,
    run_consumer: Any,
    dead_letters: asyncio.Queue[Msg],
    eventually: Any,
) -> None:
    decoded: list[ChatRequest] = []

    async def handler(delivery: Delivery) -> None:
        decoded.append(delivery.decode(ChatRequest))

    async with DeadLetterForwarder(nats_client, STREAM, "worker", DLQ):
        run_consumer(handler)
        await publish_once(js, "jobs.chat", b'{"query": 5}', "bad")
        dead = await asyncio.wait_for(dead_letters.get(), 5)
        await publish_once(js, "jobs.chat", ChatRequest(query="good"), "good")
        await eventually(lambda: len(decoded) >= 1)
    assert dead.headers is not None
    assert dead.headers["Dead-Letter-Detail"].startswith("invalid ChatRequest: query")
    assert decoded == [ChatRequest(query="good")]


async def test_handlers_run_concurrently_up_to_max_in_flight(
    js: JetStreamContext, run_consumer: Any, eventually: Any
) -> None:
    release = asyncio.Event()
    running: list[bytes] = []

    async def handler(delivery: Delivery) -> None:
        running.append(delivery.data)
        await release.wait()

    consumer = run_consumer(handler, max_in_flight=2)
    for i in range(4):
        await publish_once(js, "jobs.a", f"{i}".encode(), f"m-{i}")
    await eventually(lambda: len(running) >= 2)
    await asyncio.sleep(0.05)  # a (wrong) third handler would start now
    assert len(running) == 2
    assert consumer.in_flight == 2
    release.set()
    await eventually(lambda: len(running) >= 4)


async def test_stop_lets_handlers_in_flight_finish(js: JetStreamContext, run_consumer: Any) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[bytes] = []

    async def handler(delivery: Delivery) -> None:
        started.set()
        await release.wait()
        finished.append(delivery.data)

    consumer = run_consumer(handler)
    await publish_once(js, "jobs.a", b"long job", "m-1")
    await asyncio.wait_for(started.wait(), 5)
    stopping = asyncio.create_task(consumer.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()
    release.set()
    await asyncio.wait_for(stopping, 5)
    assert finished == [b"long job"]
    info = await js.consumer_info(STREAM, "worker")
    assert info.num_ack_pending == 0


async def test_consumer_survives_server_restart(
    nats_server: NatsServer,
    nats_connect: NatsConnect,
    eventually: Any,
) -> None:
    worker_nc, producer_nc = await nats_connect(), await nats_connect()
    js = producer_nc.jetstream()
    await ensure_stream(js, STREAM, ["jobs.>"])
    seen: list[bytes] = []

    async def handler(delivery: Delivery) -> None:
        seen.append(delivery.data)

    consumer = DurableConsumer(worker_nc, spec(fetch_timeout_s=0.5))
    consumer.start(handler)
    try:
        await publish_once(js, "jobs.a", b"before", "m-1")
        await eventually(lambda: seen == [b"before"])
        nats_server.restart()  # the stream and consumer are in the store; they come back
        await eventually(
            lambda: (
                all(nc.is_connected for nc in (worker_nc, producer_nc))
                and producer_nc.stats["reconnects"] >= 1
            ),
            what="the clients to reconnect",
        )
        await publish_once(js, "jobs.a", b"after", "m-2", timeout=5)
        await eventually(lambda: b"after" in seen, what="the message after the restart")
    finally:
        await consumer.stop()


def test_consumer_spec_validation() -> None:
    with pytest.raises(ValidationError):
        ConsumerSpec(stream="S", durable="has.dot")
    with pytest.raises(ValidationError):
        ConsumerSpec(stream="S", durable="d", retry_initial_s=5, retry_max_s=1)
    config = spec(filter_subjects=["a", "b"]).consumer_config()
    assert config.filter_subjects == ["a", "b"]
    assert config.filter_subject is None
    assert spec().consumer_config().filter_subject == "jobs.>"
    assert [spec().retry_delay(n) for n in (1, 2, 3, 4)] == [0.01, 0.02, 0.04, 0.05]


async def test_run_twice_is_refused(nats_client: NATS, js: JetStreamContext) -> None:
    consumer = DurableConsumer(nats_client, spec())

    async def handler(delivery: Delivery) -> None:
        return None

    consumer.start(handler)
    try:
        with pytest.raises(RuntimeError, match="already running"):
            consumer.start(handler)
    finally:
        await consumer.stop()
