"""JetStream: streams, once-only publishing, durable pull consumers and dead letters.

The pieces of at-least-once delivery:

* :func:`ensure_stream` makes the stream exist with the given config (creates it, or
  updates it when the config differs).
* :func:`publish_once` publishes with ``Nats-Msg-Id``: a repeat within the stream's
  duplicate window is stored once, so a publisher may retry freely.
* :class:`DurableConsumer` runs a handler over a durable pull consumer. The handler
  contract (``async def handler(delivery: Delivery) -> None``):

  - return normally: the work is done; the message is acked;
  - raise :class:`Retry`: the message is delivered again after ``Retry.delay_s`` (or
    the consumer's back-off), up to ``max_deliver`` deliveries in all;
  - raise :class:`Reject`: the message can never succeed (e.g. it is malformed); it is
    terminated and not delivered again;
  - raise anything else: logged, then handled as :class:`Retry` with the back-off.

  The same message may be delivered more than once (a crash after the work and before
  the ack, a lost ack, an ack wait that ran out), so handlers must be idempotent.
  :meth:`Delivery.in_progress` extends the ack wait for long work.
* :class:`DeadLetterForwarder` copies the messages a consumer gave up on (out of
  deliveries, and, optionally, rejected) to a dead-letter subject, with headers that
  say where each came from and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    PubAck,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from handler_base.errors import PlatformError, RequestTimeoutError, UnavailableError
from handler_base.messaging.backoff import backoff_delay
from handler_base.messaging.codec import decode_model, encode_model
from handler_base.messaging.connection import flush
from handler_base.telemetry import extract_trace_context, inject_trace_headers

logger = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

M = TypeVar("M", bound=BaseModel)

MSG_ID_HEADER = "Nats-Msg-Id"

DEAD_LETTER_REASON_HEADER = "Dead-Letter-Reason"
"""``max_deliveries`` or ``terminated``."""
DEAD_LETTER_DETAIL_HEADER = "Dead-Letter-Detail"
"""The reason the handler gave when it rejected the message (terminated only)."""
DEAD_LETTER_SUBJECT_HEADER = "Dead-Letter-Subject"
"""The subject the message was first published on."""
DEAD_LETTER_STREAM_HEADER = "Dead-Letter-Stream"
DEAD_LETTER_CONSUMER_HEADER = "Dead-Letter-Consumer"
DEAD_LETTER_SEQUENCE_HEADER = "Dead-Letter-Sequence"
"""The message's sequence number in its stream."""
DEAD_LETTER_DELIVERIES_HEADER = "Dead-Letter-Deliveries"

MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
TERMINATED_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED"

MAX_TERM_REASON_CHARS = 256


# --- streams and publishing ---------------------------------------------------------


def _stream_differences(current: StreamConfig, wanted: StreamConfig) -> list[str]:
    """The fields that ``wanted`` sets to something other than ``current`` has."""
    have = current.as_dict()
    changed = []
    for key, value in wanted.as_dict().items():
        if key == "subjects":
            if sorted(have.get(key) or []) != sorted(value):  # type: ignore[call-overload]
                changed.append(key)
        elif have.get(key) != value:
            changed.append(key)
    return changed


async def ensure_stream(
    js: JetStreamContext,
    name: str,
    subjects: Iterable[str],
    *,
    duplicate_window_s: float = 120.0,
    max_age_s: float | None = None,
    max_bytes: int | None = None,
    storage: StorageType = StorageType.FILE,
    retention: RetentionPolicy = RetentionPolicy.LIMITS,
    num_replicas: int = 1,
) -> StreamInfo:
    """Make sure the stream ``name`` exists with this config.

    A missing stream is created; an existing one whose config differs in any of these
    settings is updated (the server refuses some changes, e.g. of storage; then this
    raises its error). An existing stream that matches is left alone.

    Args:
        js: A JetStream context (``nc.jetstream()``).
        name: The stream name.
        subjects: The subjects it stores (wildcards allowed).
        duplicate_window_s: How long a ``Nats-Msg-Id`` is remembered for deduplication.
        max_age_s: How long messages are kept; None keeps them until other limits.
        max_bytes: The most bytes kept; None for no limit.
        storage: File (survives restarts) or memory.
        retention: Limits (keep until limits), interest, or work queue (delete on ack).
        num_replicas: Copies in a cluster.

    Returns:
        The stream's info after the change, if any.
    """
    wanted = StreamConfig(
        name=name,
        subjects=list(subjects),
        duplicate_window=duplicate_window_s,
        max_age=max_age_s,
        max_bytes=max_bytes,
        storage=storage,
        retention=retention,
        num_replicas=num_replicas,
    )
    try:
        info = await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        info = await js.add_stream(wanted)
        logger.info("created stream %s for %s", name, ", ".join(wanted.subjects or []))
        return info
    changed = _stream_differences(info.config, wanted)
    if not changed:
        return info
    info = await js.update_stream(wanted)
    logger.info("updated stream %s: %s changed", name, ", ".join(changed))
    return info


async def publish_once(
    js: JetStreamContext,
    subject: str,
    payload: bytes | BaseModel,
    msg_id: str,
    *,
    headers: Mapping[str, str] | None = None,
    stream: str | None = None,
    timeout: float | None = None,  # noqa: ASYNC109 (the JetStream ack wait, passed on)
) -> PubAck:
    """Publish to JetStream so that a repeat with the same ``msg_id`` is stored once.

    The stream drops a message whose ``Nats-Msg-Id`` it saw within its duplicate window
    and answers with ``duplicate=True``, so retrying after a lost acknowledgement is safe.
    The current trace context goes along in the headers.

    Args:
        js: A JetStream context.
        subject: A subject some stream stores.
        payload: The body: bytes, or a model sent as JSON.
        msg_id: The deduplication id, unique per logical message (e.g. a request id).
        headers: Extra headers.
        stream: When set, the server refuses the message unless this stream takes it.
        timeout: Seconds to wait for the stream's acknowledgement (the context's default
            when None).

    Returns:
        The acknowledgement: ``stream``, ``seq``, and ``duplicate`` for a repeat.

    Raises:
        UnavailableError: no stream takes ``subject``, or JetStream does not answer.
        RequestTimeoutError: the acknowledgement did not come in time.
    """
    data = payload if isinstance(payload, bytes) else encode_model(payload)
    with tracer.start_as_current_span(
        f"publish {subject}",
        kind=trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": "nats",
            "messaging.operation.name": "publish",
            "messaging.destination.name": subject,
            "messaging.message.id": msg_id,
        },
    ):
        message_headers = inject_trace_headers(dict(headers or {}))
        message_headers[MSG_ID_HEADER] = msg_id
        try:
            ack = await js.publish(
                subject, data, timeout=timeout, stream=stream, headers=message_headers
            )
        except nats.js.errors.NoStreamResponseError as exc:
            raise UnavailableError(f"no JetStream stream takes {subject}") from exc
        except nats.errors.TimeoutError as exc:
            raise RequestTimeoutError(f"JetStream did not acknowledge {subject} in time") from exc
    if ack.duplicate:
        logger.debug("message %s on %s was a duplicate; stored once", msg_id, subject)
    return ack


# --- consuming ----------------------------------------------------------------------


class Retry(Exception):
    """Raised by a JetStream handler: deliver this message again later.

    Args:
        reason: Why, for the log.
        delay_s: Seconds until the next delivery; None uses the consumer's back-off.
    """

    def __init__(self, reason: str = "", *, delay_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay_s = delay_s


class Reject(Exception):
    """Raised by a JetStream handler: this message can never succeed; do not redeliver it.

    The message is terminated; the reason goes to the log, to the server's termination
    advisory and, with a :class:`DeadLetterForwarder`, to the dead-letter headers.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Delivery:
    """One delivery of a JetStream message to a handler."""

    msg: Msg
    """The raw nats-py message."""

    @property
    def subject(self) -> str:
        """The subject it was published on."""
        return self.msg.subject

    @property
    def data(self) -> bytes:
        """The body."""
        return self.msg.data

    @property
    def headers(self) -> Mapping[str, str]:
        """The headers (empty when there are none)."""
        return self.msg.headers or {}

    @property
    def msg_id(self) -> str | None:
        """The ``Nats-Msg-Id`` it was published with, if any."""
        return self.headers.get(MSG_ID_HEADER)

    @property
    def stream(self) -> str:
        """The stream it is stored in."""
        return self.msg.metadata.stream

    @property
    def stream_sequence(self) -> int:
        """Its sequence number in the stream."""
        return self.msg.metadata.sequence.stream

    @property
    def num_delivered(self) -> int:
        """Which delivery this is: 1 the first time, 2 on the first redelivery, and so on."""
        return self.msg.metadata.num_delivered

    def decode(self, model_type: type[M]) -> M:
        """The body as a validated model.

        Raises:
            Reject: the body is not valid (not UTF-8, not JSON, or breaks the model's
                rules); a redelivery could not fix that.
        """
        try:
            return decode_model(self.data, model_type)
        except PlatformError as exc:
            raise Reject(f"invalid {model_type.__name__}: {exc.message}") from exc

    async def in_progress(self) -> None:
        """Tell the server the work goes on, restarting the ack wait."""
        await self.msg.in_progress()


DeliveryHandler = Callable[[Delivery], Awaitable[None]]
"""``async def handler(delivery) -> None``; see the module docstring for the contract."""


class ConsumerSpec(BaseModel):
    """A durable pull consumer and how :class:`DurableConsumer` runs it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stream: str = Field(min_length=1)
    durable: str = Field(min_length=1, pattern=r"^[^.*>\s]+$")
    """The consumer's durable name (no dots, wildcards or spaces)."""
    filter_subjects: list[str] = Field(default_factory=list)
    """Subjects of the stream this consumer takes; empty takes all."""
    ack_wait_s: float = Field(default=30.0, gt=0)
    """A delivery not acked within this is delivered again."""
    max_deliver: int = Field(default=5, ge=1)
    """Deliveries in all, the first included; after the last the message is dead-lettered."""
    max_ack_pending: int | None = Field(default=None, ge=1)
    """Messages delivered and not yet acked, over all workers; None: the server default."""
    max_in_flight: int = Field(default=16, ge=1)
    """Handlers running at once in one :class:`DurableConsumer`."""
    retry_initial_s: float = Field(default=1.0, ge=0)
    """Back-off before the first redelivery after a failure; it doubles each time."""
    retry_max_s: float = Field(default=60.0, ge=0)
    fetch_timeout_s: float = Field(default=5.0, gt=0)
    """How long one pull waits for messages."""
    drain_timeout_s: float = Field(default=30.0, ge=0)
    """On stop, how long handlers in flight may finish before they are cancelled."""
    confirm_acks: bool = True
    """Wait for the server to confirm each ack (one round trip), so that a handled message
    is known to be settled, and a clean stop leaves nothing to be delivered again."""

    @model_validator(mode="after")
    def _check_backoff(self) -> Self:
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("retry_max_s must not be below retry_initial_s")
        return self

    def consumer_config(self) -> ConsumerConfig:
        """The nats-py consumer config."""
        filters = list(self.filter_subjects)
        return ConsumerConfig(
            name=self.durable,
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s,
            max_deliver=self.max_deliver,
            max_ack_pending=self.max_ack_pending,
            filter_subject=filters[0] if len(filters) == 1 else None,
            filter_subjects=filters if len(filters) > 1 else None,
        )

    def retry_delay(self, num_delivered: int) -> float:
        """The back-off before redelivering a message that failed on delivery ``num_delivered``."""
        return backoff_delay(num_delivered, self.retry_initial_s, self.retry_max_s)


async def ensure_consumer(js: JetStreamContext, spec: ConsumerSpec) -> ConsumerInfo:
    """Create the durable consumer of ``spec``, or update it to match."""
    return await js.add_consumer(spec.stream, config=spec.consumer_config())


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class DurableConsumer:
    """Runs a handler over a durable pull consumer, at least once per message.

    Pulls up to ``max_in_flight`` messages at a time and handles each in its own task;
    the handler's outcome decides ack, redelivery or termination (see the module
    docstring). Several instances (replicas) of the same spec share the work.

    Args:
        nc: A connected client.
        spec: The consumer and how to run it.
    """

    def __init__(self, nc: NATS, spec: ConsumerSpec) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self.spec = spec
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None
        self._running = False

    @property
    def in_flight(self) -> int:
        """Messages being handled now."""
        return len(self._tasks)

    async def ensure(self) -> ConsumerInfo:
        """Create or update the consumer on the server."""
        return await ensure_consumer(self._js, self.spec)

    async def run(self, handler: DeliveryHandler) -> None:
        """Handle messages until :meth:`stop`; then let handlers in flight finish.

        Raises:
            RuntimeError: it is already running.
            nats.errors.ConnectionClosedError: the connection was closed.
        """
        self._refuse_if_running()
        self._stop = asyncio.Event()
        await self._run(handler, self._stop)

    def start(self, handler: DeliveryHandler) -> asyncio.Task[None]:
        """Run in a background task; :meth:`stop` ends it. A failure is logged."""
        self._refuse_if_running()
        self._stop = asyncio.Event()
        self._runner = asyncio.create_task(
            self._run(handler, self._stop), name=f"consumer {self.spec.durable}"
        )
        self._runner.add_done_callback(self._log_failure)
        return self._runner

    async def stop(self) -> None:
        """Stop pulling, wait for handlers in flight (up to ``drain_timeout_s``).

        Raises:
            Exception: what ended a background run (:meth:`start`) early, if anything did.
        """
        if self._stop is not None:
            self._stop.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    def _refuse_if_running(self) -> None:
        if self._running or (self._runner is not None and not self._runner.done()):
            raise RuntimeError(f"consumer {self.spec.durable} is already running")

    def _log_failure(self, runner: asyncio.Task[None]) -> None:
        if not runner.cancelled() and (exc := runner.exception()) is not None:
            logger.error(
                "consumer %s of stream %s stopped: %s",
                self.spec.durable,
                self.spec.stream,
                exc,
                exc_info=exc,
            )

    async def _run(self, handler: DeliveryHandler, stop: asyncio.Event) -> None:
        self._running = True
        stopped = asyncio.ensure_future(stop.wait())
        spec = self.spec
        try:
            await self.ensure()
            sub = await self._js.pull_subscribe_bind(consumer=spec.durable, stream=spec.stream)
            logger.info("consuming %s from stream %s", spec.durable, spec.stream)
            try:
                await self._pull_loop(sub, handler, stopped)
            finally:
                await self._finish_in_flight()
                with contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()
                logger.info("stopped consuming %s from stream %s", spec.durable, spec.stream)
        finally:
            stopped.cancel()
            self._running = False

    async def _pull_loop(
        self,
        sub: JetStreamContext.PullSubscription,
        handler: DeliveryHandler,
        stopped: asyncio.Future[Any],
    ) -> None:
        spec = self.spec
        errors_in_a_row = 0
        while not stopped.done():
            free = spec.max_in_flight - len(self._tasks)
            if free <= 0:
                await asyncio.wait({*self._tasks, stopped}, return_when=asyncio.FIRST_COMPLETED)
                continue
            fetch = asyncio.ensure_future(sub.fetch(free, timeout=spec.fetch_timeout_s))
            await asyncio.wait({fetch, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not fetch.done():
                # Messages already on their way are delivered again after the ack wait.
                fetch.cancel()
                with contextlib.suppress(asyncio.CancelledError, nats.errors.Error):
                    await fetch
                return
            try:
                messages = fetch.result()
            except nats.errors.TimeoutError:
                errors_in_a_row = 0
                continue
            except nats.errors.ConnectionClosedError:
                raise
            except Exception as exc:
                errors_in_a_row += 1
                delay = backoff_delay(errors_in_a_row, 0.5, 10.0)
                logger.warning(
                    "pulling from consumer %s of stream %s failed (%s); trying again in %.1f s",
                    spec.durable,
                    spec.stream,
                    exc,
                    delay,
                )
                await asyncio.wait({stopped}, timeout=delay)
                with contextlib.suppress(Exception):
                    await self.ensure()  # the consumer may have been deleted
                continue
            errors_in_a_row = 0
            for msg in messages:
                task = asyncio.create_task(self._handle(handler, msg))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _finish_in_flight(self) -> None:
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=self.spec.drain_timeout_s)
        if pending:
            logger.warning(
                "cancelling %d handlers of consumer %s still running after %g s",
                len(pending),
                self.spec.durable,
                self.spec.drain_timeout_s,
            )
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)

    async def _handle(self, handler: DeliveryHandler, msg: Msg) -> None:
        delivery = Delivery(msg)
        spec = self.spec
        seq, n = delivery.stream_sequence, delivery.num_delivered
        where = f"message {seq} of stream {spec.stream} (delivery {n} of {spec.max_deliver})"
        with tracer.start_as_current_span(
            f"process {msg.subject}",
            context=extract_trace_context(msg.headers),
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.name": "process",
                "messaging.destination.name": msg.subject,
                "messaging.consumer.group.name": spec.durable,
                "messaging.message.id": delivery.msg_id or "",
                "messaging.nats.stream.sequence": seq,
                "messaging.nats.delivery_count": n,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                await handler(delivery)
            except Retry as retry:
                delay = retry.delay_s if retry.delay_s is not None else spec.retry_delay(n)
                self._log_retry(where, n, delay, retry.reason or "the handler asked to retry")
                await self._settle(msg.nak(delay), where)
            except Reject as reject:
                span.set_attribute("error.type", "rejected")
                logger.warning("rejected %s: %s", where, reject.reason)
                # nats-py's msg.term() takes no reason; the protocol's "+TERM <reason>" does.
                reason = _one_line(reject.reason, MAX_TERM_REASON_CHARS)
                term = f"+TERM {reason}" if reason else "+TERM"
                await self._settle(self._nc.publish(msg.reply, term.encode()), where)
            except asyncio.CancelledError:
                await self._settle(msg.nak(), where)
                raise
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                delay = spec.retry_delay(n)
                logger.exception("the handler of consumer %s failed on %s", spec.durable, where)
                self._log_retry(where, n, delay, f"{type(exc).__name__}: {exc}")
                await self._settle(msg.nak(delay), where)
            else:
                await self._settle(msg.ack_sync() if spec.confirm_acks else msg.ack(), where)

    def _log_retry(self, where: str, n: int, delay: float, reason: str) -> None:
        if n >= self.spec.max_deliver:
            logger.warning("giving up on %s: %s", where, reason)
        else:
            logger.info("will deliver %s again in %.2f s: %s", where, delay, reason)

    async def _settle(self, ack: Awaitable[Any], where: str) -> None:
        try:
            await ack
        except nats.errors.Error as exc:
            logger.warning(
                "could not acknowledge %s (%s); the server delivers it again after the ack wait",
                where,
                exc,
            )


# --- dead letters -------------------------------------------------------------------


class ConsumerAdvisory(BaseModel):
    """The part of a JetStream consumer advisory that dead-lettering needs."""

    model_config = ConfigDict(extra="ignore")

    type: str
    stream: str
    consumer: str
    stream_seq: int
    deliveries: int
    reason: str | None = None
    """The handler's reason, on a termination advisory (nats-server 2.11+)."""


class DeadLetterForwarder:
    """Copies the messages a consumer gave up on to a dead-letter subject.

    It listens to the server's advisories for the consumer: ``MAX_DELIVERIES`` (out of
    deliveries) and, unless ``include_terminated`` is False, ``MSG_TERMINATED`` (rejected
    by the handler). Each advisory names the stream sequence; the message is fetched from
    the stream by that sequence and published to ``dead_letter_subject`` with its body and
    headers, plus:

    * ``Dead-Letter-Reason``: ``max_deliveries`` or ``terminated``;
    * ``Dead-Letter-Detail``: the handler's reason (terminated only);
    * ``Dead-Letter-Subject``, ``Dead-Letter-Stream``, ``Dead-Letter-Consumer``,
      ``Dead-Letter-Sequence``, ``Dead-Letter-Deliveries``.

    When a stream stores the dead-letter subject, the copy goes through JetStream with a
    ``Nats-Msg-Id`` of stream, consumer and sequence, so a repeat is stored once; when
    none does, it is published on core NATS.

    Advisories are core NATS messages, sent at most once: a forwarder must be running
    when the consumer gives up on a message. The message itself stays in the stream (under
    limits retention), so nothing is lost meanwhile; :meth:`forward` moves one by hand.
    Run one forwarder per consumer in each replica; they share a queue group.

    Args:
        nc: A connected client.
        stream: The stream.
        consumer: The durable consumer's name, or ``*`` for every consumer of the stream.
        dead_letter_subject: Where the copies go.
        include_terminated: Also forward messages the handler rejected.
        queue: The queue group of the advisory subscription.
    """

    def __init__(
        self,
        nc: NATS,
        stream: str,
        consumer: str,
        dead_letter_subject: str,
        *,
        include_terminated: bool = True,
        queue: str | None = None,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self.stream = stream
        self.consumer = consumer
        self.dead_letter_subject = dead_letter_subject
        self.include_terminated = include_terminated
        self.queue = queue if queue is not None else f"dead-letter-{stream}-{consumer}"
        self._subs: list[Subscription] = []

    @property
    def advisory_subjects(self) -> list[str]:
        """The advisory subjects it listens to."""
        kinds = [MAX_DELIVERIES_ADVISORY]
        if self.include_terminated:
            kinds.append(TERMINATED_ADVISORY)
        return [f"{kind}.{self.stream}.{self.consumer}" for kind in kinds]

    async def start(self) -> Self:
        """Subscribe to the advisories."""
        if self._subs:
            return self
        for subject in self.advisory_subjects:
            self._subs.append(
                await self._nc.subscribe(subject, queue=self.queue, cb=self._on_advisory)
            )
        await flush(self._nc)
        logger.info(
            "forwarding dead letters of %s.%s to %s",
            self.stream,
            self.consumer,
            self.dead_letter_subject,
        )
        return self

    async def stop(self) -> None:
        """Stop listening, after forwarding the advisories already received."""
        subs, self._subs = self._subs, []
        for sub in subs:
            with contextlib.suppress(nats.errors.Error):
                await sub.drain()  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _on_advisory(self, msg: Msg) -> None:
        try:
            advisory = ConsumerAdvisory.model_validate_json(msg.data)
        except ValidationError as exc:
            logger.error("ignored an advisory on %s that is not understood: %s", msg.subject, exc)
            return
        terminated = msg.subject.startswith(TERMINATED_ADVISORY)
        try:
            await self.forward(
                advisory.stream_seq,
                consumer=advisory.consumer,
                deliveries=advisory.deliveries,
                reason="terminated" if terminated else "max_deliveries",
                detail=advisory.reason if terminated else None,
            )
        except Exception:
            logger.exception(
                "could not dead-letter message %d of stream %s; it stays in the stream",
                advisory.stream_seq,
                advisory.stream,
            )

    async def forward(
        self,
        sequence: int,
        *,
        consumer: str,
        deliveries: int,
        reason: str,
        detail: str | None = None,
    ) -> None:
        """Copy message ``sequence`` of the stream to the dead-letter subject.

        Raises:
            nats.js.errors.NotFoundError: the stream no longer has the message.
        """
        stored = await self._js.get_msg(self.stream, sequence)
        headers = {
            key: value
            for key, value in (stored.headers or {}).items()
            if not key.startswith("Nats-")  # dedup id, expectations, TTL: not for the copy
        }
        headers |= {
            DEAD_LETTER_REASON_HEADER: reason,
            DEAD_LETTER_SUBJECT_HEADER: stored.subject or "",
            DEAD_LETTER_STREAM_HEADER: self.stream,
            DEAD_LETTER_CONSUMER_HEADER: consumer,
            DEAD_LETTER_SEQUENCE_HEADER: str(sequence),
            DEAD_LETTER_DELIVERIES_HEADER: str(deliveries),
        }
        if detail:
            headers[DEAD_LETTER_DETAIL_HEADER] = _one_line(detail, MAX_TERM_REASON_CHARS)
        data = stored.data or b""
        try:
            target = await self._js.find_stream_name_by_subject(self.dead_letter_subject)
        except nats.js.errors.NotFoundError:
            await self._nc.publish(self.dead_letter_subject, data, headers=headers)
        else:
            await self._js.publish(
                self.dead_letter_subject,
                data,
                stream=target,
                headers={**headers, MSG_ID_HEADER: f"{self.stream}.{consumer}.{sequence}"},
            )
        logger.warning(
            "dead-lettered message %d of stream %s (%s on %s after %d deliveries) to %s",
            sequence,
            self.stream,
            reason,
            stored.subject,
            deliveries,
            self.dead_letter_subject,
        )
