"""Serving a typed async handler on a NATS subject (request/reply, in a queue group).

The handler contract is ``async def handler(request: RequestModel) -> ReplyModel``. The
serving side does everything around it:

* decodes the request (UTF-8 JSON, validated by the model); a bad one is answered with
  the Error shape, ``invalid_request`` or ``too_large``, and never reaches the handler;
* answers a :class:`~handler_base.errors.PlatformError` raised by the handler with its
  code, and any other exception with ``internal`` (logged with the request id);
* sets ``Nats-Service-Error`` and ``Nats-Service-Error-Code`` on every error reply;
* drops (and logs) a message that has no reply subject;
* continues the caller's trace: a SERVER span, child of the context in the headers,
  wraps decoding and the handler.

No failure of one request stops the subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from types import TracebackType
from typing import Generic, Self, TypeVar

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import DEFAULT_SUB_PENDING_MSGS_LIMIT, Subscription
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode
from pydantic import BaseModel

from handler_base.errors import InternalError, PlatformError, UnavailableError
from handler_base.messaging.codec import (
    REQUEST_ID_HEADER,
    decode_model,
    encode_error,
    encode_model,
)
from handler_base.messaging.connection import flush
from handler_base.telemetry import extract_trace_context

logger = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

ReqT = TypeVar("ReqT", bound=BaseModel)

Handler = Callable[[ReqT], Awaitable[BaseModel]]
"""``async def handler(request) -> reply``: raise a PlatformError to answer with its code."""

DEFAULT_MAX_IN_FLIGHT = 64
DEFAULT_DRAIN_TIMEOUT_S = 30.0


_current_message: ContextVar[Msg | None] = ContextVar("nats_request_message", default=None)


def current_message() -> Msg | None:
    """The message a :class:`RequestServer` handler is answering (None outside one).

    For handlers that need more than the decoded request: its headers (a deadline, a
    request id), its subject.
    """
    return _current_message.get()


def new_request_id() -> str:
    """A fresh request id, for requests that came without one."""
    return uuid.uuid4().hex


class RequestServer(Generic[ReqT]):
    """Answers the requests on one subject with a typed async handler.

    Each message is handled in its own task, so a slow request does not hold up the
    others. At most ``max_in_flight`` handlers run at once (a semaphore): when all slots
    are taken, further messages wait in the subscription's pending buffer (nats-py keeps
    up to ``pending_msgs_limit`` of them; past that it drops messages and reports a slow
    consumer, and those requesters time out). Bound it by what the handler can do at once
    (CPU, a model's batch size), not by how many requests may be waiting.

    Use it as an async context manager, or call :meth:`start` and :meth:`drain`. Drain it
    before closing the connection, so that requests in flight are still answered.

    Args:
        nc: A connected client (see :func:`handler_base.messaging.connect`).
        subject: The subject to serve, e.g. ``ai.chat.request``.
        handler: ``async def handler(request: request_type) -> BaseModel``.
        request_type: The model requests are validated against.
        queue: The queue group; the servers of one group split the requests among them.
            Defaults to the subject, so every replica of a service shares one group. An
            empty string subscribes outside any group (every server gets every request).
        max_in_flight: The most handlers running at once.
        pending_msgs_limit: The most messages waiting for a slot.
    """

    def __init__(
        self,
        nc: NATS,
        subject: str,
        handler: Handler[ReqT],
        request_type: type[ReqT],
        *,
        queue: str | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        pending_msgs_limit: int = DEFAULT_SUB_PENDING_MSGS_LIMIT,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
        self._nc = nc
        self.subject = subject
        self.queue = subject if queue is None else queue
        self.max_in_flight = max_in_flight
        self._handler = handler
        self._request_type = request_type
        self._pending_msgs_limit = pending_msgs_limit
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._sub: Subscription | None = None
        self._span_attributes = {
            "messaging.system": "nats",
            "messaging.operation.name": "process",
            "messaging.destination.name": subject,
            "messaging.consumer.group.name": self.queue,
        }

    @property
    def in_flight(self) -> int:
        """How many requests are being handled now."""
        return len(self._tasks)

    @property
    def is_serving(self) -> bool:
        """True between :meth:`start` and :meth:`drain`."""
        return self._sub is not None

    async def start(self) -> Self:
        """Subscribe, and make sure the server knows before returning."""
        if self._sub is not None:
            return self
        self._sub = await self._nc.subscribe(
            self.subject,
            queue=self.queue,
            cb=self._on_message,
            pending_msgs_limit=self._pending_msgs_limit,
        )
        await flush(self._nc)
        logger.info(
            "serving %s in queue group %r (at most %d at once)",
            self.subject,
            self.queue,
            self.max_in_flight,
        )
        return self

    async def drain(self, timeout: float = DEFAULT_DRAIN_TIMEOUT_S) -> None:  # noqa: ASYNC109
        """Stop taking requests, and finish the ones already received.

        Requests still running after ``timeout`` seconds are cancelled and answered with
        ``unavailable``, so their callers can try elsewhere at once.
        """
        sub, self._sub = self._sub, None
        if sub is None:
            return
        deadline = time.monotonic() + timeout
        if not (self._nc.is_closed or self._nc.is_draining):
            try:
                await asyncio.wait_for(sub.drain(), timeout)  # type: ignore[no-untyped-call]
            except (TimeoutError, nats.errors.Error) as exc:
                logger.warning("could not drain the subscription to %s: %s", self.subject, exc)
        if self._tasks:
            _, pending = await asyncio.wait(
                set(self._tasks), timeout=max(0.0, deadline - time.monotonic())
            )
            if pending:
                logger.warning(
                    "cancelling %d requests on %s still running after %g s of draining",
                    len(pending),
                    self.subject,
                    timeout,
                )
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending)
        logger.info("stopped serving %s", self.subject)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.drain()

    # --- per message ------------------------------------------------------------------

    async def _on_message(self, msg: Msg) -> None:
        # Blocking here (all slots taken) keeps later messages in the pending buffer.
        await self._slots.acquire()
        task = asyncio.create_task(self._answer(msg))
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("answering a request on %s failed", self.subject, exc_info=exc)

    async def _answer(self, msg: Msg) -> None:
        _current_message.set(msg)  # each message is answered in its own task
        if not msg.reply:
            logger.warning(
                "dropped a message on %s: it has no reply subject, so it cannot be answered",
                msg.subject,
            )
            return
        headers = msg.headers or {}
        request_id = headers.get(REQUEST_ID_HEADER)
        with tracer.start_as_current_span(
            f"process {self.subject}",
            context=extract_trace_context(headers),
            kind=trace.SpanKind.SERVER,
            attributes=self._span_attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                request = decode_model(msg.data, self._request_type)
                body_id = getattr(request, "request_id", None)
                if isinstance(body_id, str):
                    request_id = body_id
                reply = await self._handler(request)
                await self._send(msg, encode_model(reply), None, request_id)
            except PlatformError as error:
                self._log_error(span, error, request_id)
                await self._send(msg, *encode_error(error), request_id)
            except asyncio.CancelledError:
                shutdown = UnavailableError("the service is shutting down; try again")
                self._log_error(span, shutdown, request_id)
                await self._send(msg, *encode_error(shutdown), request_id)
                raise
            except Exception as exc:
                request_id = request_id or new_request_id()
                logger.exception("the handler of %s failed on request %s", self.subject, request_id)
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                span.set_attribute("error.type", "internal")
                internal = InternalError(f"internal error while handling request {request_id}")
                await self._send(msg, *encode_error(internal), request_id)

    def _log_error(self, span: Span, error: PlatformError, request_id: str | None) -> None:
        span.set_attribute("error.type", error.code.value)
        if error.http_status >= 500:
            span.set_status(Status(StatusCode.ERROR, error.code.value))
            level = logging.WARNING
        else:
            level = logging.INFO
        logger.log(
            level,
            "answered request %s on %s with %s: %s",
            request_id or "(no id)",
            self.subject,
            error.code.value,
            error.message,
        )

    async def _send(
        self, msg: Msg, data: bytes, headers: dict[str, str] | None, request_id: str | None
    ) -> None:
        try:
            await self._nc.publish(msg.reply, data, headers=headers)
        except nats.errors.MaxPayloadError:
            error = InternalError(
                f"the reply is {len(data)} bytes, over the NATS server's limit of "
                f"{self._nc.max_payload} bytes"
            )
            logger.error("request %s on %s: %s", request_id, self.subject, error.message)
            body, headers = encode_error(error)
            with contextlib.suppress(nats.errors.Error):
                await self._nc.publish(msg.reply, body, headers=headers)
        except nats.errors.Error as exc:
            logger.warning(
                "could not send the reply to request %s on %s: %s", request_id, self.subject, exc
            )


async def serve(
    nc: NATS,
    subject: str,
    handler: Handler[ReqT],
    request_type: type[ReqT],
    *,
    queue: str | None = None,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
) -> RequestServer[ReqT]:
    """Start answering requests on ``subject`` with ``handler``; see :class:`RequestServer`.

    Returns:
        The started server; ``await server.drain()`` stops it.
    """
    server = RequestServer(
        nc, subject, handler, request_type, queue=queue, max_in_flight=max_in_flight
    )
    return await server.start()
