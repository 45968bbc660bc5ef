"""Telemetry: in-process spans, OTLP export to a real receiver, a missing collector."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from handler_base import Settings
from handler_base.telemetry import (
    Telemetry,
    extract_trace_context,
    inject_trace_headers,
    setup_telemetry,
    span,
)
from handler_base.testing.ray_fixtures import free_port

PROTOCOLS = ["grpc", "http/protobuf"]


@dataclass
class Received:
    """What a receiver got: span names, metric names, resource attributes."""

    spans: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def add_traces(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            self.resources.append(_attributes(resource_spans.resource.attributes))
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(s.name for s in scope_spans.spans)
        self.arrived.set()

    def add_metrics(self, request: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        for resource_metrics in request.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                self.metrics.extend(m.name for m in scope_metrics.metrics)


def _attributes(attributes: Any) -> dict[str, Any]:
    return {kv.key: kv.value.string_value for kv in attributes}


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, received: Received) -> None:
        self.received = received

    def Export(self, request: Any, context: Any) -> Any:
        self.received.add_traces(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, received: Received) -> None:
        self.received = received

    def Export(self, request: Any, context: Any) -> Any:
        self.received.add_metrics(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


@pytest.fixture
def grpc_receiver() -> Iterator[tuple[str, Received]]:
    """A real OTLP/gRPC receiver (the collector's trace and metrics services) on loopback."""
    received = Received()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(received), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_MetricsService(received), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"http://127.0.0.1:{port}", received
    server.stop(grace=None)


@pytest.fixture
def http_receiver() -> Iterator[tuple[str, Received]]:
    """A real OTLP/HTTP receiver (``POST /v1/traces`` and ``/v1/metrics``) on loopback."""
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v1/traces":
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                received.add_traces(request)
            elif self.path == "/v1/metrics":
                metrics_request = metrics_service_pb2.ExportMetricsServiceRequest()
                metrics_request.ParseFromString(body)
                received.add_metrics(metrics_request)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", received
    server.shutdown()
    server.server_close()
    thread.join()


def _make_telemetry(endpoint: str | None, protocol: str = "grpc") -> Telemetry:
    settings = Settings(
        otel_exporter_otlp_endpoint=endpoint,
        otel_exporter_otlp_protocol=protocol,
        otel_service_name="telemetry-test",
    )
    return Telemetry.create(settings, service_version="1.2.3")


def _record_some(telemetry: Telemetry, span_name: str) -> None:
    tracer = telemetry.tracer("tests")
    with tracer.start_as_current_span(span_name) as outer:
        outer.set_attribute("test.attr", "yes")
        with tracer.start_as_current_span(f"{span_name}.child"):
            pass
    counter = telemetry.meter("tests").create_counter("test.requests")
    counter.add(3, {"route": "/x"})


def test_without_endpoint_spans_are_real_but_stay_in_process() -> None:
    telemetry = _make_telemetry(None)
    assert not telemetry.exporting
    memory = InMemorySpanExporter()
    telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(memory))

    _record_some(telemetry, "local.work")

    finished = memory.get_finished_spans()
    assert [s.name for s in finished] == ["local.work.child", "local.work"]
    assert finished[1].context.trace_id != 0
    assert finished[1].resource.attributes["service.name"] == "telemetry-test"
    assert finished[1].resource.attributes["service.version"] == "1.2.3"
    started = time.perf_counter()
    telemetry.shutdown()
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_missing_collector_delays_neither_start_nor_shutdown(protocol: str) -> None:
    closed = free_port()  # nothing listens there
    started = time.perf_counter()
    telemetry = _make_telemetry(f"http://127.0.0.1:{closed}", protocol)
    setup_s = time.perf_counter() - started
    assert telemetry.exporting

    for i in range(50):
        _record_some(telemetry, f"lost.{i}")
    started = time.perf_counter()
    telemetry.shutdown()
    shutdown_s = time.perf_counter() - started

    assert setup_s < 1.0
    assert shutdown_s < 1.0
    telemetry.shutdown()  # idempotent


@pytest.fixture
def silent_collector() -> Iterator[str]:
    """A loopback port that accepts connections and never answers (a hung collector)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_silent_collector_delays_neither_start_nor_shutdown(
    silent_collector: str, protocol: str
) -> None:
    started = time.perf_counter()
    telemetry = _make_telemetry(silent_collector, protocol)
    setup_s = time.perf_counter() - started

    _record_some(telemetry, "unanswered")
    started = time.perf_counter()
    telemetry.shutdown()
    shutdown_s = time.perf_counter() - started

    assert setup_s < 1.0
    assert shutdown_s < 1.0


def test_spans_and_metrics_reach_an_otlp_grpc_receiver(
    grpc_receiver: tuple[str, Received],
) -> None:
    endpoint, received = grpc_receiver
    telemetry = _make_telemetry(endpoint)

    _record_some(telemetry, "exported.work")
    assert telemetry.force_flush()
    assert received.arrived.wait(5)
    telemetry.shutdown()  # the metric reader's last collection goes out here

    assert "exported.work" in received.spans
    assert "exported.work.child" in received.spans
    assert {"service.name": "telemetry-test", "service.version": "1.2.3"}.items() <= (
        received.resources[0].items()
    )
    assert "test.requests" in received.metrics


def test_spans_and_metrics_reach_an_otlp_http_receiver(
    http_receiver: tuple[str, Received],
) -> None:
    endpoint, received = http_receiver
    telemetry = _make_telemetry(endpoint, "http/protobuf")

    _record_some(telemetry, "http.work")
    telemetry.shutdown()

    assert "http.work" in received.spans
    assert received.resources[0]["service.name"] == "telemetry-test"
    assert "test.requests" in received.metrics


def test_setup_telemetry_is_once_per_process_and_feeds_span_helper() -> None:
    first = setup_telemetry(Settings(otel_exporter_otlp_endpoint=None), "setup-test")
    again = setup_telemetry(Settings(otel_exporter_otlp_endpoint=None), "setup-test")
    assert again is first
    assert trace.get_tracer_provider() is first.tracer_provider

    memory = InMemorySpanExporter()
    first.tracer_provider.add_span_processor(SimpleSpanProcessor(memory))
    timings: dict[str, float] = {}
    with span("chat.embed", {"collection": "default"}, timings=timings, key="embed"):
        time.sleep(0.01)
    with pytest.raises(ValueError, match="boom"), span("chat.search", timings=timings):
        raise ValueError("boom")

    assert timings["embed"] >= 10
    assert "chat.search" in timings
    by_name = {s.name: s for s in memory.get_finished_spans()}
    assert by_name["chat.embed"].attributes == {"collection": "default"}
    assert not by_name["chat.search"].status.is_ok
    assert by_name["chat.search"].events[0].name == "exception"


def test_trace_context_round_trips_through_headers() -> None:
    telemetry = _make_telemetry(None)
    with telemetry.tracer("tests").start_as_current_span("edge") as edge:
        headers = inject_trace_headers()
    assert headers["traceparent"].split("-")[1] == f"{edge.get_span_context().trace_id:032x}"
    context = extract_trace_context(headers)
    with telemetry.tracer("tests").start_as_current_span("model", context=context) as model:
        assert model.get_span_context().trace_id == edge.get_span_context().trace_id
    telemetry.shutdown()
