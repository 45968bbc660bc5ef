"""OpenTelemetry for the platform: tracing and metrics in one call, trace context in headers.

:func:`setup_telemetry` installs a tracer provider and a meter provider for the process.
With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, spans (batched) and metrics (read periodically)
go to that collector by OTLP, over gRPC or HTTP/protobuf as
``OTEL_EXPORTER_OTLP_PROTOCOL`` says. Without it the providers are still real, so spans
have real trace ids and carry context, but nothing leaves the process. A collector that
is down or missing never holds up start or shutdown: exports time out after
:data:`EXPORT_TIMEOUT_S` and shutdown gives up after :data:`SHUTDOWN_TIMEOUT_S`.

The trace context travels as W3C ``traceparent``/``tracestate`` headers, over HTTP and
in NATS message headers alike, so one request is one trace from the edge to each model.
"""

from __future__ import annotations

import atexit
import functools
import importlib.metadata
import inspect
import logging
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics import Histogram, Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, Tracer
from opentelemetry.util.types import AttributeValue

from handler_base.settings import Settings

logger = logging.getLogger(__name__)

INSTRUMENTATION_NAME = "handler_base"
"""Name of the tracer and meter that this module's helpers use."""

EXPORT_TIMEOUT_S = 0.4
"""Deadline of one export to the collector. Below a second, the OTLP exporters make one
attempt and drop the batch instead of backing off (1 s, 2 s, ...) while a collector is down."""

SHUTDOWN_TIMEOUT_S = 0.8
"""The most that :meth:`Telemetry.shutdown` waits for the last spans and metrics to go out."""

STAGE_DURATION_METRIC = "handler.stage.duration"
"""Histogram (milliseconds, attribute ``stage``) that :func:`span` records into."""

OtlpProtocol = Literal["grpc", "http/protobuf"]


class Telemetry:
    """The tracer and meter providers of a process, and their exporters.

    Build one with :meth:`create` (providers only, not installed globally; what tests
    use) or with :func:`setup_telemetry` (installed as the process's global providers).

    Attributes:
        service_name: The ``service.name`` resource attribute.
        service_version: The ``service.version`` resource attribute.
        endpoint: The OTLP collector, or None when nothing is exported.
        protocol: The OTLP protocol used towards ``endpoint``.
        tracer_provider: The SDK tracer provider.
        meter_provider: The SDK meter provider.
    """

    def __init__(
        self,
        *,
        service_name: str,
        service_version: str,
        endpoint: str | None,
        protocol: OtlpProtocol,
        tracer_provider: TracerProvider,
        meter_provider: MeterProvider,
    ) -> None:
        self.service_name = service_name
        self.service_version = service_version
        self.endpoint = endpoint
        self.protocol = protocol
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self._shutdown_lock = threading.Lock()
        self._is_shut_down = False

    @classmethod
    def create(
        cls,
        settings: Settings | None = None,
        service_name: str | None = None,
        service_version: str | None = None,
        *,
        export_timeout_s: float = EXPORT_TIMEOUT_S,
        span_delay_s: float = 2.0,
        metric_interval_s: float = 30.0,
    ) -> Telemetry:
        """Build tracer and meter providers, exporting by OTLP when an endpoint is set.

        Nothing is installed globally and no connection is made here (the exporters
        connect lazily), so this returns at once even when the collector is down.

        Args:
            settings: Where the endpoint, protocol and default service name come from;
                read from the environment when None.
            service_name: ``service.name``; ``settings.otel_service_name`` when None.
            service_version: ``service.version``; the installed ``handler-base``
                version when None.
            export_timeout_s: Deadline of one export.
            span_delay_s: Longest time a finished span waits in the batch.
            metric_interval_s: Interval between two metric exports.

        Returns:
            The telemetry handle; call :meth:`shutdown` when done.
        """
        settings = settings or Settings()
        name = service_name or settings.otel_service_name
        version = service_version or _package_version()
        resource = Resource.create({SERVICE_NAME: name, SERVICE_VERSION: version})
        endpoint = settings.otel_exporter_otlp_endpoint
        protocol = settings.otel_exporter_otlp_protocol

        # The providers' own atexit hooks wait up to 30 s; the process-wide handle
        # registers the bounded shutdown instead (see setup_telemetry).
        tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        readers: list[PeriodicExportingMetricReader] = []
        if endpoint is not None:
            span_exporter, metric_exporter = _otlp_exporters(endpoint, protocol, export_timeout_s)
            tracer_provider.add_span_processor(
                BatchSpanProcessor(
                    span_exporter,
                    schedule_delay_millis=span_delay_s * 1000,
                    export_timeout_millis=export_timeout_s * 1000,
                )
            )
            readers.append(
                PeriodicExportingMetricReader(
                    metric_exporter,
                    export_interval_millis=metric_interval_s * 1000,
                    export_timeout_millis=export_timeout_s * 1000,
                )
            )
        meter_provider = MeterProvider(
            resource=resource, metric_readers=readers, shutdown_on_exit=False
        )
        return cls(
            service_name=name,
            service_version=version,
            endpoint=endpoint,
            protocol=protocol,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        )

    @property
    def exporting(self) -> bool:
        """True when spans and metrics go out to an OTLP collector."""
        return self.endpoint is not None

    @property
    def is_shut_down(self) -> bool:
        """True once :meth:`shutdown` has been called."""
        return self._is_shut_down

    def tracer(self, name: str = INSTRUMENTATION_NAME) -> Tracer:
        """A tracer of this handle's provider (global or not)."""
        return self.tracer_provider.get_tracer(name)

    def meter(self, name: str = INSTRUMENTATION_NAME) -> Meter:
        """A meter of this handle's provider (global or not)."""
        return self.meter_provider.get_meter(name)

    def force_flush(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> bool:
        """Export what is buffered now, waiting at most about ``timeout_s``.

        Returns:
            True when both providers flushed in time.
        """
        if self._is_shut_down:
            return False
        outcome: list[bool] = []

        def flush() -> None:
            spans_ok = self.tracer_provider.force_flush(int(timeout_s * 1000))
            metrics_ok = self.meter_provider.force_flush(timeout_s * 1000)
            outcome.append(spans_ok and metrics_ok)

        return _run_bounded(flush, timeout_s, "telemetry flush") and all(outcome)

    def shutdown(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Send the last spans and metrics and stop the exporters; idempotent.

        Waits at most ``timeout_s``: when the collector does not answer in time, what
        is left is dropped and the exporter threads finish on their own shortly after.
        """
        with self._shutdown_lock:
            if self._is_shut_down:
                return
            self._is_shut_down = True

        def stop() -> None:
            deadline = time.monotonic() + timeout_s
            self.tracer_provider.shutdown()
            remaining_ms = max(0.0, deadline - time.monotonic()) * 1000
            self.meter_provider.shutdown(timeout_millis=remaining_ms)

        _run_bounded(stop, timeout_s, "telemetry shutdown")


_process_telemetry: Telemetry | None = None
_process_lock = threading.Lock()


def setup_telemetry(
    settings: Settings | None = None,
    service_name: str | None = None,
    service_version: str | None = None,
) -> Telemetry:
    """Set up tracing and metrics for this process, once; later calls return the same handle.

    The providers become OpenTelemetry's global ones, so ``trace.get_tracer(...)``,
    ``metrics.get_meter(...)`` and :func:`span` anywhere in the process use them. A
    bounded :meth:`Telemetry.shutdown` runs at exit. OpenTelemetry lets a process set
    its global providers only once, so after a shutdown this still returns the first
    (shut down) handle.

    Args:
        settings: Read from the environment when None.
        service_name: ``service.name``; ``settings.otel_service_name`` when None.
        service_version: ``service.version``; the ``handler-base`` version when None.

    Returns:
        The process's telemetry handle.
    """
    global _process_telemetry
    with _process_lock:
        if _process_telemetry is not None:
            if service_name is not None and service_name != _process_telemetry.service_name:
                logger.warning(
                    "telemetry is already set up for service %r; %r shares it",
                    _process_telemetry.service_name,
                    service_name,
                )
            return _process_telemetry
        telemetry = Telemetry.create(settings, service_name, service_version)
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            trace.set_tracer_provider(telemetry.tracer_provider)
        else:
            logger.warning("a global tracer provider was already set; it is kept")
        metrics.set_meter_provider(telemetry.meter_provider)
        atexit.register(telemetry.shutdown)
        if telemetry.exporting:
            logger.info(
                "telemetry of %s goes to %s by OTLP (%s)",
                telemetry.service_name,
                telemetry.endpoint,
                telemetry.protocol,
            )
        else:
            logger.info(
                "telemetry of %s stays in-process (no OTLP endpoint set)", telemetry.service_name
            )
        _process_telemetry = telemetry
        return telemetry


@contextmanager
def span(
    name: str,
    attributes: Mapping[str, AttributeValue] | None = None,
    *,
    timings: dict[str, float] | None = None,
    key: str | None = None,
) -> Iterator[Span]:
    """Time a stage of a request as the current span, and record its duration.

    Works in sync and async code alike. An exception escaping the block is recorded on
    the span and sets its status to error, then propagates.

    Args:
        name: Span name, e.g. ``"chat.embed"``.
        attributes: Span attributes.
        timings: When given, the duration in milliseconds is stored there too (the
            ``timings_ms`` of the replies).
        key: Key in ``timings``; ``name`` when None.

    Yields:
        The span, for adding attributes or events.
    """
    tracer = trace.get_tracer(INSTRUMENTATION_NAME)
    start = time.perf_counter()
    try:
        with tracer.start_as_current_span(name, attributes=attributes) as current:
            yield current
    finally:
        elapsed_ms = (time.perf_counter() - start) * 1000
        if timings is not None:
            timings[key or name] = elapsed_ms
        _stage_histogram().record(elapsed_ms, {"stage": name})


def record_stage(
    name: str,
    start_ns: int,
    *,
    timings: dict[str, float] | None = None,
    key: str | None = None,
) -> None:
    """Record a stage that has just ended as a span from ``start_ns`` to now, and its duration.

    For a stage that spans an async generator's yields, where :func:`span` would stay the
    current context for the consumer's code too: the span is made after the fact, with the
    current span as its parent, and is never current.

    Args:
        name: Span name, e.g. ``"rag.generate"``.
        start_ns: When the stage began, from :func:`time.time_ns`.
        timings: When given, the duration in milliseconds is stored there too.
        key: Key in ``timings``; ``name`` when None.
    """
    end_ns = time.time_ns()
    trace.get_tracer(INSTRUMENTATION_NAME).start_span(name, start_time=start_ns).end(
        end_time=end_ns
    )
    elapsed_ms = (end_ns - start_ns) / 1e6
    if timings is not None:
        timings[key or name] = elapsed_ms
    _stage_histogram().record(elapsed_ms, {"stage": name})


_histogram: Histogram | None = None


def _stage_histogram() -> Histogram:
    # Made from the global meter, which hands over to the real provider once
    # setup_telemetry installs it.
    global _histogram
    if _histogram is None:
        _histogram = metrics.get_meter(INSTRUMENTATION_NAME).create_histogram(
            STAGE_DURATION_METRIC, unit="ms", description="Duration of a stage of a request"
        )
    return _histogram


def inject_trace_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Add the current trace context to ``headers`` (a new dict when None) and return it."""
    carrier: dict[str, str] = {} if headers is None else headers
    propagate.inject(carrier)
    return carrier


def extract_trace_context(headers: Mapping[str, str] | None) -> otel_context.Context:
    """The trace context carried by ``headers`` (an empty context when there is none)."""
    return propagate.extract(dict(headers or {}))


TRACE_CONTEXT_KWARG = "trace_context"
"""Keyword argument that carries the caller's trace context across a Ray handle call.

Ray handle calls do not carry OpenTelemetry context on their own. A client that sets
``passes_trace_context`` (see :class:`handler_base.clients.ServiceClient`) passes the
W3C headers of its current span as this keyword; a deployment method decorated with
:func:`continue_trace` takes it and runs under that context, so its spans join the
caller's trace."""

F = TypeVar("F", bound=Callable[..., Any])


def trace_carrier() -> dict[str, str] | None:
    """The current trace context as W3C headers, or None when there is no valid span."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    return inject_trace_headers()


def continue_trace(method: F) -> F:
    """Let a Ray Serve handle method continue its caller's trace.

    The decorated method (``async def`` or an async generator) takes an extra, optional
    keyword :data:`TRACE_CONTEXT_KWARG` (W3C headers) and runs under the context they
    carry; without it, it runs as before.

    Args:
        method: The deployment method.

    Returns:
        The method, accepting ``trace_context=``.
    """
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
            carrier = kwargs.pop(TRACE_CONTEXT_KWARG, None)
            token = otel_context.attach(extract_trace_context(carrier)) if carrier else None
            items = method(*args, **kwargs)
            try:
                async for item in items:
                    yield item
            finally:
                await items.aclose()
                if token is not None:
                    otel_context.detach(token)

        return stream  # type: ignore[return-value]

    @functools.wraps(method)
    async def call(*args: Any, **kwargs: Any) -> Any:
        carrier = kwargs.pop(TRACE_CONTEXT_KWARG, None)
        token = otel_context.attach(extract_trace_context(carrier)) if carrier else None
        try:
            result: Awaitable[Any] = method(*args, **kwargs)
            return await result
        finally:
            if token is not None:
                otel_context.detach(token)

    return call  # type: ignore[return-value]


def _otlp_exporters(
    endpoint: str, protocol: OtlpProtocol, timeout_s: float
) -> tuple[SpanExporter, MetricExporter]:
    """The OTLP span and metric exporters for ``protocol``."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetricExporter,
        )
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return (
            GrpcSpanExporter(endpoint=endpoint, timeout=timeout_s),
            GrpcMetricExporter(endpoint=endpoint, timeout=timeout_s),
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    base = endpoint.rstrip("/")
    span_exporter: SpanExporter = HttpSpanExporter(endpoint=f"{base}/v1/traces", timeout=timeout_s)
    metric_exporter: MetricExporter = HttpMetricExporter(
        endpoint=f"{base}/v1/metrics", timeout=timeout_s
    )
    return span_exporter, metric_exporter


def _run_bounded(work: Callable[[], None], timeout_s: float, what: str) -> bool:
    """Run ``work()`` in a daemon thread and wait at most ``timeout_s`` for it.

    Returns:
        True when it finished in time.
    """
    thread = threading.Thread(target=work, name=what, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        logger.warning(
            "%s did not finish within %.1f s; unsent telemetry is dropped", what, timeout_s
        )
        return False
    return True


def _package_version() -> str:
    try:
        return importlib.metadata.version("handler-base")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"
