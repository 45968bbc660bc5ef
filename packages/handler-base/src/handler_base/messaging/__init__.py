"""NATS messaging for the platform, on nats-py.

* :func:`connect`: Settings to a connected client, reconnecting with back-off;
  :func:`flush` after subscribing.
* :func:`request`: typed request/reply; error replies raised as typed ``PlatformError``;
  :func:`request_durably` the same through a JetStream stream (reply inbox in a header).
* :func:`serve` / :class:`RequestServer`: a typed async handler answering a subject.
* JetStream: :func:`ensure_stream`, :func:`publish_once`, :class:`DurableConsumer` (with
  :class:`Retry` and :class:`Reject`), :class:`DeadLetterForwarder`.
"""

from handler_base.messaging.backoff import backoff_delay
from handler_base.messaging.codec import (
    REQUEST_ID_HEADER,
    decode_model,
    decode_reply,
    encode_error,
    encode_model,
)
from handler_base.messaging.connection import connect, connect_options, flush, redact_url
from handler_base.messaging.jetstream import (
    ConsumerSpec,
    DeadLetterForwarder,
    Delivery,
    DeliveryHandler,
    DurableConsumer,
    Reject,
    Retry,
    ensure_consumer,
    ensure_stream,
    publish_once,
)
from handler_base.messaging.requesting import (
    REPLY_TO_HEADER,
    TIMEOUT_HEADER,
    request,
    request_durably,
)
from handler_base.messaging.serving import Handler, RequestServer, current_message, serve

__all__ = [
    "REPLY_TO_HEADER",
    "REQUEST_ID_HEADER",
    "TIMEOUT_HEADER",
    "ConsumerSpec",
    "DeadLetterForwarder",
    "Delivery",
    "DeliveryHandler",
    "DurableConsumer",
    "Handler",
    "Reject",
    "RequestServer",
    "Retry",
    "backoff_delay",
    "connect",
    "connect_options",
    "current_message",
    "decode_model",
    "decode_reply",
    "encode_error",
    "encode_model",
    "ensure_consumer",
    "ensure_stream",
    "flush",
    "publish_once",
    "redact_url",
    "request",
    "request_durably",
    "serve",
]
