"""NATS messaging for the platform, on nats-py.

* :func:`connect`: Settings to a connected client, reconnecting with back-off;
  :func:`flush` after subscribing.
* :func:`request`: typed request/reply; error replies raised as typed ``PlatformError``.
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
from handler_base.messaging.requesting import request
from handler_base.messaging.serving import Handler, RequestServer, serve

__all__ = [
    "REQUEST_ID_HEADER",
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
    "serve",
]
