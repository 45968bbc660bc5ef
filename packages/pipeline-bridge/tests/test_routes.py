"""The bridge's routes are data: the table, its entries, and an added entry served.

The served-route test adds a route the way a deployment would, as one entry of import
paths in the bridge's config, and nothing else: a real ``nats-server`` (the handler-base
fixtures) carries the requests, and the route's client is a real
:class:`~handler_base.clients.ServiceClient` calling a real HTTP echo server on loopback.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from nats.aio.client import Client as NATS
from pydantic import BaseModel, Field, ValidationError

from handler_base.clients import ChatClient, ServiceClient, VoiceClient
from handler_base.errors import InvalidRequestError, NotFoundError
from handler_base.messages import ChatRequest, VoiceRequest
from handler_base.messaging import decode_reply, request, request_durably
from handler_base.settings import Settings
from pipeline_bridge import Bridge, BridgeConfig, RouteSpec

ECHO_SUBJECT = "tools.echo"


class EchoRequest(BaseModel):
    text: str = Field(min_length=1)
    request_id: str | None = None


class EchoReply(BaseModel):
    text: str
    length: int
    request_id: str | None = None


class EchoClient(ServiceClient):
    """Client of the echo server; it reads its URL from ``chat_url`` (set by the test)."""

    service: ClassVar[str] = "chat"
    app_name: ClassVar[str] = "echo"
    deployment_name: ClassVar[str] = "Echo"

    async def echo(self, request: EchoRequest) -> EchoReply:
        return EchoReply.model_validate(await self._call("echo", request, "/echo"))

    def not_async(self) -> None:
        """Not a route method: routes call async methods."""


class _EchoHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if body["text"] == "nobody":
            status = 404
            reply: dict[str, Any] = {"error": {"code": "not_found", "message": "nobody here"}}
        else:
            status = 200
            reply = {**body, "length": len(body["text"])}
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def echo_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


ECHO_ENTRY = {
    "name": "echo",
    "subject": ECHO_SUBJECT,
    "request_model": f"{__name__}:EchoRequest",
    "client": f"{__name__}:EchoClient",
    "method": "echo",
}
"""The added route, as a Serve config gives it."""


def test_the_table_is_chat_and_voice_from_the_config_then_the_added_routes() -> None:
    config = BridgeConfig(chat_subject="x.chat", routes=(RouteSpec.model_validate(ECHO_ENTRY),))
    table = [(r.name, r.subject, r.request_model, r.client, r.method) for r in config.route_table()]
    assert table == [
        ("chat", "x.chat", ChatRequest, ChatClient, "chat"),
        ("voice", "voice.request", VoiceRequest, VoiceClient, "voice"),
        ("echo", ECHO_SUBJECT, EchoRequest, EchoClient, "echo"),
    ]
    assert config.subjects == ["x.chat", "voice.request", ECHO_SUBJECT]


def test_a_config_with_routes_round_trips_through_json() -> None:
    config = BridgeConfig.model_validate({"routes": [ECHO_ENTRY]})
    dumped = config.model_dump(mode="json")
    assert dumped["routes"] == [ECHO_ENTRY]
    assert BridgeConfig.model_validate(json.loads(json.dumps(dumped))) == config


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"subject": "ai.chat.request"}, "subject ai.chat.request"),
        ({"name": "voice"}, "name voice"),
        ({"subject": "tools.*"}, "subject"),
        ({"method": "not_async"}, "not a public async method"),
        ({"method": "_call"}, "not a public async method"),
        ({"request_model": f"{__name__}:EchoClient"}, "request_model"),
        ({"client": f"{__name__}:EchoRequest"}, "client"),
        ({"client": "no_such_module:EchoClient"}, "client"),
    ],
)
def test_a_bad_route_entry_is_refused_with_its_reason(change: dict[str, str], why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        BridgeConfig.model_validate({"routes": [{**ECHO_ENTRY, **change}]})


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["core", "at_least_once"])
async def test_an_added_route_entry_is_served_with_no_other_code(
    mode: str, echo_url: str, nats_settings: Settings, nats_client: NATS
) -> None:
    config = BridgeConfig.model_validate({"mode": mode, "ack_wait_s": 5, "routes": [ECHO_ENTRY]})
    settings = nats_settings.model_copy(update={"chat_url": echo_url, "http_retries": 0})
    ask = request if mode == "core" else request_durably
    bridge = Bridge(config, settings)
    await bridge.start()
    try:
        question = EchoRequest(text="héllo", request_id="echo-1")
        answer = await ask(nats_client, ECHO_SUBJECT, question, EchoReply, timeout=10)
        assert answer == EchoReply(text="héllo", length=5, request_id="echo-1")
        # The target's error, and a malformed request, get the bridge's error replies.
        with pytest.raises(NotFoundError, match="nobody here"):
            await ask(nats_client, ECHO_SUBJECT, EchoRequest(text="nobody"), EchoReply)
        if mode == "core":
            reply = await nats_client.request(ECHO_SUBJECT, b'{"text": ""}', timeout=10)
            with pytest.raises(InvalidRequestError):
                decode_reply(reply.data, reply.headers, EchoReply)
            assert reply.headers is not None
            assert reply.headers["Nats-Service-Error-Code"] == "400"
    finally:
        await bridge.stop()
    assert bridge.stats["handler_calls"] == 2
