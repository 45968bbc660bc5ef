"""Typed request/reply: send a pydantic model, get the reply model or a typed error.

* :func:`request`: core NATS request/reply.
* :func:`request_durably`: the same through a JetStream stream that captures the subject
  (at-least-once serving, e.g. the NATS bridge's ``at_least_once`` mode). A stored message
  keeps its headers but not its reply subject, so the reply inbox travels in the
  :data:`REPLY_TO_HEADER` header.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from typing import TypeVar

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from opentelemetry import context as otel_context
from opentelemetry import trace
from pydantic import BaseModel

from handler_base.errors import (
    InvalidRequestError,
    RequestTimeoutError,
    TooLargeError,
    UnavailableError,
)
from handler_base.messaging.codec import REQUEST_ID_HEADER, decode_reply, encode_model
from handler_base.messaging.connection import flush
from handler_base.messaging.jetstream import MSG_ID_HEADER
from handler_base.telemetry import extract_trace_context, inject_trace_headers

R = TypeVar("R", bound=BaseModel)

DEFAULT_REQUEST_TIMEOUT_S = 30.0
"""The default of ``NATS_REQUEST_TIMEOUT_S``."""

REPLY_TO_HEADER = "Reply-To"
"""The subject to send the reply to, for a request that went through a JetStream stream."""

TIMEOUT_HEADER = "X-Request-Timeout-S"
"""Seconds the requester waits for the reply, counted from when it sent the request; a
server may stop working on the request after that and answer ``timeout``."""

STREAM_PUBLISH_TIMEOUT_S = 5.0
"""The longest wait for the stream to confirm it stored a request."""

tracer = trace.get_tracer(__name__)


async def request(
    nc: NATS,
    subject: str,
    payload: BaseModel,
    reply_type: type[R],
    timeout: float = DEFAULT_REQUEST_TIMEOUT_S,  # noqa: ASYNC109 (a NATS request timeout)
    *,
    headers: Mapping[str, str] | None = None,
) -> R:
    """Send ``payload`` as a request on ``subject`` and decode the reply as ``reply_type``.

    The current trace context goes along in the message headers (inside a CLIENT span),
    and so does the payload's ``request_id`` when it has one (``X-Request-Id``).

    Args:
        nc: A connected client.
        subject: The subject the service listens on, e.g. ``ai.chat.request``.
        payload: The request message.
        reply_type: The model of a successful reply.
        timeout: Seconds to wait for the reply.
        headers: Extra headers for the request.

    Returns:
        The reply, validated.

    Raises:
        PlatformError: the service answered with an error; the subclass matches its code
            (``InvalidRequestError`` for ``invalid_request``, and so on).
        RequestTimeoutError: no reply within ``timeout``.
        TooLargeError: the request is over the NATS server's payload limit.
        UnavailableError: no service listens on ``subject``, or the client is not connected.
        InternalError: the reply is not a valid ``reply_type``.
    """
    with tracer.start_as_current_span(
        f"send {subject}",
        context=_callers_trace(headers),
        kind=trace.SpanKind.CLIENT,
        attributes={
            "messaging.system": "nats",
            "messaging.operation.name": "send",
            "messaging.destination.name": subject,
        },
    ):
        message_headers = _request_headers(payload, headers)
        data = encode_model(payload)
        try:
            reply = await nc.request(
                subject, data, timeout=timeout, headers=message_headers or None
            )
        except nats.errors.MaxPayloadError as exc:
            raise _over_payload_limit(data, nc) from exc
        except nats.errors.NoRespondersError as exc:
            raise UnavailableError(f"no service is listening on {subject}") from exc
        except nats.errors.TimeoutError as exc:
            raise RequestTimeoutError(f"no reply on {subject} within {timeout:g} s") from exc
        except _NOT_CONNECTED as exc:
            raise UnavailableError(f"not connected to NATS, cannot send on {subject}") from exc
        return decode_reply(reply.data, reply.headers, reply_type)


def _callers_trace(headers: Mapping[str, str] | None) -> otel_context.Context | None:
    """The trace a caller named with a ``traceparent`` header (it wins over the current one)."""
    if headers and any(name.lower() == "traceparent" for name in headers):
        return extract_trace_context(headers)
    return None


def _request_headers(
    payload: BaseModel, headers: Mapping[str, str] | None, timeout: float | None = None
) -> dict[str, str]:
    """``headers`` plus the payload's request id, the timeout (when given), the trace."""
    message_headers = dict(headers or {})
    request_id = getattr(payload, "request_id", None)
    if isinstance(request_id, str) and REQUEST_ID_HEADER not in message_headers:
        message_headers[REQUEST_ID_HEADER] = request_id
    if timeout is not None:
        message_headers.setdefault(TIMEOUT_HEADER, f"{timeout:g}")
    return inject_trace_headers(message_headers)


_NOT_CONNECTED = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
)
"""What nats-py raises when a message cannot leave: the caller gets ``unavailable``."""


def _over_payload_limit(data: bytes, nc: NATS) -> TooLargeError:
    return TooLargeError(
        f"the request is {len(data)} bytes, over the NATS server's limit of {nc.max_payload} bytes"
    )


async def request_durably(
    nc: NATS,
    subject: str,
    payload: BaseModel,
    reply_type: type[R],
    timeout: float = DEFAULT_REQUEST_TIMEOUT_S,  # noqa: ASYNC109 (a NATS request timeout)
    *,
    headers: Mapping[str, str] | None = None,
    msg_id: str | None = None,
) -> R:
    """Send a request into the JetStream stream that captures ``subject``; await the reply.

    The request is stored by the stream (confirmed before this waits for the reply), so a
    server that dies while handling it leaves it to be delivered again to another one.
    The reply comes to a fresh inbox named in the :data:`REPLY_TO_HEADER` header. To
    repeat a request safely (after a timeout, say), send it again with the same
    ``request_id``: a server that deduplicates answers the repeat with the reply it
    already gave.

    Args:
        nc: A connected client.
        subject: A subject a stream captures, e.g. ``ai.chat.request``.
        payload: The request message.
        reply_type: The model of a successful reply.
        timeout: Seconds to wait for the reply, storing included.
        headers: Extra headers.
        msg_id: A ``Nats-Msg-Id``: the stream stores a message with an id it saw within
            its duplicate window only once, and only the first inbox gets the reply.
            Leave it None for repeats, which must reach the server.

    Returns:
        The reply, validated.

    Raises:
        PlatformError: the service answered with an error, as its typed error.
        UnavailableError: no stream captures ``subject``, or the client is not connected.
        InvalidRequestError: the stream already stored a message with ``msg_id``.
        RequestTimeoutError: no reply within ``timeout``.
        TooLargeError: the request is over the NATS server's payload limit.
    """
    with tracer.start_as_current_span(
        f"send {subject}",
        context=_callers_trace(headers),
        kind=trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": "nats",
            "messaging.operation.name": "send",
            "messaging.destination.name": subject,
        },
    ):
        started = time.monotonic()
        inbox = nc.new_inbox()
        message_headers = _request_headers(payload, headers, timeout)
        message_headers[REPLY_TO_HEADER] = inbox
        if msg_id is not None:
            message_headers[MSG_ID_HEADER] = msg_id
        data = encode_model(payload)
        try:
            sub = await nc.subscribe(inbox, max_msgs=1)
            await flush(nc)
        except nats.errors.Error as exc:
            raise UnavailableError(f"not connected to NATS, cannot send on {subject}") from exc
        try:
            try:
                ack = await nc.jetstream().publish(
                    subject,
                    data,
                    headers=message_headers,
                    timeout=min(timeout, STREAM_PUBLISH_TIMEOUT_S),
                )
            except nats.errors.MaxPayloadError as exc:
                raise _over_payload_limit(data, nc) from exc
            except (nats.js.errors.NoStreamResponseError, nats.errors.NoRespondersError) as exc:
                raise UnavailableError(f"no JetStream stream stores {subject}") from exc
            except nats.errors.TimeoutError as exc:
                raise RequestTimeoutError(f"no stream confirmed the request on {subject}") from exc
            if ack.duplicate:
                raise InvalidRequestError(
                    f"the stream {ack.stream} already holds a request with Nats-Msg-Id "
                    f"{msg_id!r}; repeat it with the same request_id and no Nats-Msg-Id"
                )
            remaining = timeout - (time.monotonic() - started)
            try:
                reply = await sub.next_msg(timeout=max(remaining, 0.001))
            except nats.errors.TimeoutError as exc:
                raise RequestTimeoutError(f"no reply on {subject} within {timeout:g} s") from exc
        except _NOT_CONNECTED as exc:
            raise UnavailableError(f"not connected to NATS, cannot send on {subject}") from exc
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        return decode_reply(reply.data, reply.headers, reply_type)
