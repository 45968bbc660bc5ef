"""Helpers for the messaging tests: waiting on conditions, capturing spans."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from handler_base.messaging import jetstream, requesting, serving


async def wait_until(
    predicate: Callable[[], Any], within: float = 10.0, what: str = "the condition"
) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
def eventually() -> Callable[..., Any]:
    return wait_until


@pytest.fixture
def tracer_provider(monkeypatch: pytest.MonkeyPatch) -> TracerProvider:
    """A private SDK tracer provider whose tracers the messaging modules use in this test.

    The global provider is left alone (a process may set it only once); the W3C
    propagator that carries the context in headers is global and needs no setup.
    """
    provider = TracerProvider()
    for module in (requesting, serving, jetstream):
        monkeypatch.setattr(module, "tracer", provider.get_tracer(module.__name__))
    return provider


@pytest.fixture
def span_exporter(tracer_provider: TracerProvider) -> InMemorySpanExporter:
    """The spans the messaging code makes in this test."""
    exporter = InMemorySpanExporter()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter
