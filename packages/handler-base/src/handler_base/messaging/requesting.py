"""Typed request/reply: send a pydantic model, get the reply model or a typed error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import nats.errors
from nats.aio.client import Client as NATS
from opentelemetry import trace
from pydantic import BaseModel

from handler_base.errors import RequestTimeoutError, TooLargeError, UnavailableError
from handler_base.messaging.codec import REQUEST_ID_HEADER, decode_reply, encode_model
from handler_base.telemetry import inject_trace_headers

R = TypeVar("R", bound=BaseModel)

DEFAULT_REQUEST_TIMEOUT_S = 30.0
"""The default of ``NATS_REQUEST_TIMEOUT_S``."""

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
        kind=trace.SpanKind.CLIENT,
        attributes={
            "messaging.system": "nats",
            "messaging.operation.name": "send",
            "messaging.destination.name": subject,
        },
    ):
        message_headers = dict(headers or {})
        request_id = getattr(payload, "request_id", None)
        if isinstance(request_id, str) and REQUEST_ID_HEADER not in message_headers:
            message_headers[REQUEST_ID_HEADER] = request_id
        inject_trace_headers(message_headers)
        data = encode_model(payload)
        try:
            reply = await nc.request(
                subject, data, timeout=timeout, headers=message_headers or None
            )
        except nats.errors.MaxPayloadError as exc:
            raise TooLargeError(
                f"the request is {len(data)} bytes, over the NATS server's limit of "
                f"{nc.max_payload} bytes"
            ) from exc
        except nats.errors.NoRespondersError as exc:
            raise UnavailableError(f"no service is listening on {subject}") from exc
        except nats.errors.TimeoutError as exc:
            raise RequestTimeoutError(f"no reply on {subject} within {timeout:g} s") from exc
        except (
            nats.errors.ConnectionClosedError,
            nats.errors.ConnectionDrainingError,
            nats.errors.ConnectionReconnectingError,
            nats.errors.OutboundBufferLimitError,
        ) as exc:
            raise UnavailableError(f"not connected to NATS, cannot send on {subject}") from exc
        return decode_reply(reply.data, reply.headers, reply_type)
