"""OpenTelemetry for the platform: trace context carried in message headers.

The trace context travels as W3C ``traceparent``/``tracestate`` headers, over HTTP and
in NATS message headers alike, so one request is one trace from the edge to each model.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate


def inject_trace_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Add the current trace context to ``headers`` (a new dict when None) and return it."""
    carrier: dict[str, str] = {} if headers is None else headers
    propagate.inject(carrier)
    return carrier


def extract_trace_context(headers: Mapping[str, str] | None) -> otel_context.Context:
    """The trace context carried by ``headers`` (an empty context when there is none)."""
    return propagate.extract(dict(headers or {}))
