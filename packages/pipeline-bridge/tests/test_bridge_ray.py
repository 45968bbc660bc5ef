"""NATSBridge actors on the session's Ray cluster, with the real models behind them.

The session's model apps (``model_apps``) run with the chat app (a Milvus Lite knowledge
base in a temporary folder, holding a made-up fact) and the voice app. Every test has
its own nats-server. Spans go by OTLP (HTTP/protobuf) to a small receiver in this test
process, which keeps what it is sent.

Questions about a collection that does not exist are answered without the LLM (no
sources, nothing to generate), so most tests cost one embedding and one search each.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from chat_handler.rag import NO_SOURCES_ANSWER
from handler_base.errors import InvalidRequestError
from handler_base.messages import ChatRequest, ChatResponse, VoiceRequest, VoiceResponse
from handler_base.messaging import (
    REPLY_TO_HEADER,
    REQUEST_ID_HEADER,
    TIMEOUT_HEADER,
    connect,
    decode_reply,
    flush,
    request,
    request_durably,
)
from handler_base.settings import Settings
from handler_base.testing.nats import NatsServer
from handler_base.testing.nats_fixtures import NatsServerFactory, nats_test_settings
from handler_base.testing.platform import SharedApps
from handler_base.testing.ray_fixtures import LocalServe, free_port
from handler_base.testing.speech import speak
from pipeline_bridge import BridgeConfig, start_bridges, stop_bridges

pytestmark = pytest.mark.integration

COLLECTION = "products"
FACT = "The ZX-41 flux capacitor ships in teal and costs 417 euros."
QUESTION = "How much does the ZX-41 flux capacitor cost?"
DOCUMENTS = [  # the chat handler's own test corpus, whose answer is known to cite the fact
    {
        "id": "zx41",
        "text": FACT + " Dr. Okafor designed its housing.",
        "metadata": {"title": "ZX-41 flux capacitor"},
    },
    {
        "id": "qp7",
        "text": "The QP-7 router blinks amber while its firmware updates. It weighs 2.3 kg.",
    },
    {"id": "hours", "text": "The support desk opens at 9 in the morning and closes at 5."},
]
EMPTY = "nothing_here"
"""A collection that does not exist: answered at once, without the LLM."""
CHAT = "ai.chat.request"
VOICE = "voice.request"
LONG_S = 300.0
"""Requests that reach the LLM on a busy two-core machine may take minutes."""


@dataclass
class OtlpReceiver:
    """An OTLP/HTTP trace receiver on loopback: what the exporters send, kept in memory."""

    port: int
    spans: list[tuple[str, str, str]] = field(default_factory=list)
    """``(trace id, span name, service.name)`` of every span received."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def of_trace(self, trace_id: str) -> list[tuple[str, str]]:
        return [(name, service) for tid, name, service in self.spans if tid == trace_id]


def start_receiver() -> tuple[OtlpReceiver, ThreadingHTTPServer]:
    receiver = OtlpReceiver(port=free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path == "/v1/traces":
                export = ExportTraceServiceRequest.FromString(body)
                for resource_spans in export.resource_spans:
                    service = next(
                        (
                            a.value.string_value
                            for a in resource_spans.resource.attributes
                            if a.key == "service.name"
                        ),
                        "",
                    )
                    for scope in resource_spans.scope_spans:
                        for s in scope.spans:
                            receiver.spans.append((s.trace_id.hex(), s.name, service))
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", receiver.port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver, server


@pytest.fixture(scope="module")
def otlp() -> Iterator[OtlpReceiver]:
    receiver, server = start_receiver()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def stack(
    serve_instance: LocalServe,
    model_apps: SharedApps,
    otlp: OtlpReceiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """Deploy chat (exporting its spans to ``otlp``) and voice beside the models; ingest."""
    from ray import serve

    from chat_handler.deployment import ChatArgs, ChatDeployment
    from voice_assistant import build_app as build_voice

    data_dir = tmp_path_factory.mktemp("bridge-data")
    apps: dict[str, Any] = {
        # The real chat deployment, with the OTLP endpoint in its environment.
        "chat": ChatDeployment.options(  # type: ignore[attr-defined]
            ray_actor_options={
                "num_cpus": 0.1,
                "runtime_env": {
                    "env_vars": {
                        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url,
                        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                        # The LLM on a busy two-core machine: well over the 60 s default.
                        "HTTP_TIMEOUT_S": str(LONG_S),
                    }
                },
            }
        ).bind(ChatArgs(milvus_uri=str(data_dir / "milvus.db"))),
        "voice": build_voice(None),
    }
    for name, app in apps.items():
        serve.run(app, name=name, route_prefix=f"/{name}")
    try:
        response = httpx.post(
            f"{serve_instance.http_url}/chat/knowledge/documents",
            json={"collection": COLLECTION, "documents": DOCUMENTS},
            timeout=LONG_S,
        )
        assert response.status_code == 200, response.text
        yield serve_instance.http_url
    finally:
        for name in reversed(apps):
            serve.delete(name)


@pytest.fixture
def nats(nats_server_factory: NatsServerFactory) -> NatsServer:
    """A nats-server that takes voice replies (WAV in base64) of several megabytes."""
    return nats_server_factory(config="max_payload: 8388608\n")


@pytest.fixture
def bridge_settings(nats: NatsServer, otlp: OtlpReceiver) -> Settings:
    return nats_test_settings(
        nats.url,
        nats_name="nats-bridge",
        otel_exporter_otlp_endpoint=otlp.url,
        otel_exporter_otlp_protocol="http/protobuf",
        http_timeout_s=LONG_S,
    )


@pytest_asyncio.fixture
async def nc(bridge_settings: Settings) -> AsyncIterator[NATS]:
    client = await connect(bridge_settings, connect_wait_s=10.0)
    try:
        yield client
    finally:
        await client.close()


@dataclass
class Bridges:
    settings: Settings
    namespace: str = field(default_factory=lambda: f"bridge-test-{uuid.uuid4().hex[:8]}")
    started: list[BridgeConfig] = field(default_factory=list)
    actors: list[Any] = field(default_factory=list)
    """Held until the end of the test: Ray ends an actor that nothing refers to."""

    async def start(self, count: int = 1, **config: Any) -> list[Any]:
        values: dict[str, Any] = {
            "namespace": self.namespace,
            "deadline_s": LONG_S,
            "max_deadline_s": LONG_S,
            **config,
        }
        bridge_config = BridgeConfig(**values)
        self.started.append(bridge_config)
        # A runtime env of its own puts the actors in fresh worker processes: a reused
        # worker keeps the OpenTelemetry provider an earlier actor set up (set once per
        # process), which would export this test's spans elsewhere.
        runtime_env = {"env_vars": {"BRIDGE_TEST_NAMESPACE": self.namespace}}
        actors = await asyncio.to_thread(
            functools.partial(
                start_bridges, count, bridge_config, self.settings, runtime_env=runtime_env
            )
        )
        self.actors.extend(actors)
        return actors


@pytest_asyncio.fixture
async def bridges(stack: str, bridge_settings: Settings) -> AsyncIterator[Bridges]:
    made = Bridges(bridge_settings)
    try:
        yield made
    finally:
        for config in made.started:
            await asyncio.to_thread(stop_bridges, config, count=4, timeout_s=30)


async def info(actor: Any) -> dict[str, Any]:
    result: dict[str, Any] = await actor.info.remote()
    return result


def traceparent() -> tuple[str, dict[str, str]]:
    trace_id = secrets.token_hex(16)
    return trace_id, {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}


async def test_chat_over_nats_is_answered_in_one_trace(
    bridges: Bridges, nc: NATS, otlp: OtlpReceiver
) -> None:
    await bridges.start()
    trace_id, headers = traceparent()
    answer = await request(
        nc,
        CHAT,
        ChatRequest(query=QUESTION, collection=COLLECTION, top_n=2, request_id="n-1"),
        ChatResponse,
        timeout=LONG_S,
        headers=headers,
    )
    assert answer.request_id == "n-1"
    assert "417" in answer.response
    assert answer.sources[0].metadata["doc_id"] == "zx41"

    wanted = {
        ("process ai.chat.request", "nats-bridge"),
        ("bridge.chat", "nats-bridge"),
        ("rag.embed", "chat-handler"),
        ("rag.generate", "chat-handler"),
    }
    for _ in range(120):  # spans leave in batches, every two seconds or so
        if wanted <= set(otlp.of_trace(trace_id)):
            break
        await asyncio.sleep(0.5)
    assert wanted <= set(otlp.of_trace(trace_id)), otlp.of_trace(trace_id)


async def test_voice_over_nats_is_answered(bridges: Bridges, nc: NATS) -> None:
    await bridges.start()
    wav = await asyncio.to_thread(question_wav)
    answer = await request(
        nc,
        VOICE,
        VoiceRequest(audio=wav, collection=COLLECTION, top_n=2, request_id="v-1"),
        VoiceResponse,
        timeout=LONG_S,
    )
    assert answer.request_id == "v-1"
    assert "zx" in answer.transcript.lower() or "flux" in answer.transcript.lower()
    assert answer.response
    assert answer.audio[:4] == b"RIFF"


@cache
def question_wav() -> bytes:
    return speak(QUESTION)


async def test_malformed_messages_get_errors_while_good_ones_flow(
    bridges: Bridges, nc: NATS
) -> None:
    await bridges.start()
    good = ChatRequest(query="What is the ZX-41?", collection=EMPTY)
    for bad in (b"{oops", b'{"query": ""}', b'{"query": "hi", "top_k": "many"}', b"\x80"):
        reply = await nc.request(CHAT, bad, timeout=60)
        with pytest.raises(InvalidRequestError):
            decode_reply(reply.data, reply.headers, ChatResponse)
        answer = await request(nc, CHAT, good, ChatResponse, timeout=LONG_S)
        assert answer.response == NO_SOURCES_ANSWER
    # Valid for the bridge, refused by the chat handler (a broken Milvus filter): the
    # handler's error comes back as the reply.
    refused = ChatRequest(query=QUESTION, collection=COLLECTION, filter="doc_id === (")
    with pytest.raises(InvalidRequestError):
        await request(nc, CHAT, refused, ChatResponse, timeout=LONG_S)


async def test_two_bridges_share_the_work(bridges: Bridges, nc: NATS) -> None:
    actors = await bridges.start(2)
    answers = await asyncio.gather(
        *(
            request(nc, CHAT, ChatRequest(query=f"Question {i}?", collection=EMPTY), ChatResponse)
            for i in range(16)
        )
    )
    assert all(a.response == NO_SOURCES_ANSWER for a in answers)
    counts = [(await info(actor))["answered"] for actor in actors]
    assert sum(counts) == 16
    assert all(count > 0 for count in counts), counts


async def test_the_bridge_serves_again_after_the_nats_server_restarts(
    bridges: Bridges, nc: NATS, nats: NatsServer
) -> None:
    (actor,) = await bridges.start()
    question = ChatRequest(query="Anyone there?", collection=EMPTY)
    assert (await request(nc, CHAT, question, ChatResponse, timeout=60)).response
    before = await info(actor)
    await asyncio.to_thread(nats.restart)
    for _ in range(120):
        try:
            answer = await request(nc, CHAT, question, ChatResponse, timeout=5)
            break
        except Exception:
            await asyncio.sleep(0.5)
    else:
        pytest.fail("the bridge did not serve again after the NATS server restarted")
    assert answer.response == NO_SOURCES_ANSWER
    after = await info(actor)
    assert after["pid"] == before["pid"]  # the same actor, not a restart
    assert after["answered"] == before["answered"] + 1


async def test_at_least_once_a_duplicate_is_answered_once_with_the_same_reply(
    bridges: Bridges, nc: NATS
) -> None:
    (actor,) = await bridges.start(mode="at_least_once", ack_wait_s=10)
    question = ChatRequest(query="Twice?", collection=EMPTY, request_id="dup-1")
    first = await request_durably(nc, CHAT, question, ChatResponse, timeout=LONG_S)
    again = await request_durably(nc, CHAT, question, ChatResponse, timeout=LONG_S)
    assert again == first  # timings included: the stored reply, not a second answer
    stats = await info(actor)
    assert (stats["handler_calls"], stats["repeats"]) == (1, 1)


async def test_at_least_once_a_bridge_killed_mid_request_still_answers_once(
    bridges: Bridges, nc: NATS
) -> None:
    import ray

    (actor,) = await bridges.start(mode="at_least_once", ack_wait_s=3)
    before = await info(actor)
    inbox = nc.new_inbox()
    replies = await nc.subscribe(inbox)
    await flush(nc)
    # A voice request: Whisper, the LLM and TTS take seconds even on an idle machine, so
    # the kill lands while the request is in the handler.
    wav = await asyncio.to_thread(question_wav)
    question = VoiceRequest(audio=wav, collection=COLLECTION, top_n=2, request_id="k-1")
    await nc.jetstream().publish(
        VOICE,
        question.model_dump_json().encode(),
        headers={REPLY_TO_HEADER: inbox, TIMEOUT_HEADER: str(LONG_S), REQUEST_ID_HEADER: "k-1"},
    )
    for _ in range(600):
        if (await info(actor))["handler_calls"] >= 1:
            break
        await asyncio.sleep(0.1)
    ray.kill(actor, no_restart=False)

    reply = await replies.next_msg(timeout=LONG_S)
    answer = decode_reply(reply.data, reply.headers, VoiceResponse)
    assert answer.request_id == "k-1"
    assert answer.response
    assert answer.audio[:4] == b"RIFF"
    # The actor counts an answer just after publishing it: give the count a moment.
    for _ in range(100):
        after = await info(actor)
        if after["answered"]:
            break
        await asyncio.sleep(0.1)
    assert after["pid"] != before["pid"]  # answered by the restarted actor
    assert after["answered"] == 1
    with pytest.raises(TimeoutError):  # and only once, even after another ack wait
        await replies.next_msg(timeout=8)
