"""Soak under faults, short: the whole platform under load while parts of it die.

The cpu profile of ``aictl up`` (every model, chat, voice) on the session's Serve (the
models are the session's ``model_apps``), a nats-server and one NATS bridge in
at-least-once mode. Chat and voice requests go over HTTP and NATS from several clients
while an embeddings replica, the chat replica and the bridge actor are killed and the
nats-server restarts. Nothing accepted may be lost or answered twice, and afterwards
every kind of request is answered again with nobody's help. ``bench/soak.py`` is the
long run (with memory); both use :mod:`handler_base.testing.soak`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from handler_base.testing.nats import NatsServer
from handler_base.testing.nats_fixtures import nats_test_settings
from handler_base.testing.platform import SharedApps, delete_apps, deploy_apps, platform_nats
from handler_base.testing.ray_fixtures import LocalServe
from handler_base.testing.soak import (
    SOAK_COLLECTION,
    SOAK_DOCUMENTS,
    SOAK_QUESTION,
    Outcome,
    SoakClient,
    SoakResult,
    Workload,
    classify_reply,
    every_kind_answered,
    fault_schedule,
    memory_growth,
    run_soak,
    wait_until_answered,
)
from handler_base.testing.speech import speak

REQUESTS = 72
CLIENTS = 6
FAULT_EVERY_S = 20.0


@dataclass
class Platform:
    http_url: str
    nats: NatsServer
    bridge: Any
    bridge_config: Any


@pytest_asyncio.fixture(scope="module")
async def platform(
    serve_instance: LocalServe, model_apps: SharedApps, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Platform]:
    from aictl.apps import StackOptions, applications
    from pipeline_bridge import BridgeConfig, start_bridges, stop_bridges

    data = Path(tmp_path_factory.mktemp("soak"))
    # The bridge runs as actors here (killing one is a fault), not as the bridge app.
    stack = StackOptions(milvus_uri=str(data / "milvus.db"), with_web=False, with_bridge=False)
    # The handler apps of the cpu profile; the models are the session's (model_apps).
    apps = [app for app in applications(stack) if app.name not in model_apps.apps]
    names = await asyncio.to_thread(deploy_apps, apps)
    nats = platform_nats().start()
    config = BridgeConfig(
        mode="at_least_once",
        namespace=f"soak-{uuid.uuid4().hex[:6]}",
        deadline_s=300,
        ack_wait_s=10,
    )
    try:
        async with httpx.AsyncClient(timeout=300) as http:
            response = await http.post(
                f"{serve_instance.http_url}/chat/knowledge/documents",
                json={"collection": SOAK_COLLECTION, "documents": SOAK_DOCUMENTS},
            )
            assert response.status_code == 200, response.text
        # The bridge's handler calls: a voice answer on a busy two-core machine may take
        # minutes, well over the 60 s default.
        settings = nats_test_settings(nats.url, nats_name="nats-bridge", http_timeout_s=300)
        (bridge,) = await asyncio.to_thread(start_bridges, 1, config, settings)
        yield Platform(serve_instance.http_url, nats, bridge, config)
    finally:
        await asyncio.to_thread(stop_bridges, config, count=1, timeout_s=30)
        nats.close()
        await asyncio.to_thread(delete_apps, names)


@pytest.fixture(scope="module")
def question_wav() -> bytes:
    return speak(SOAK_QUESTION)


@pytest.mark.integration
@pytest.mark.timeout(600)
async def test_nothing_accepted_is_lost_or_doubled_while_parts_die(
    platform: Platform, question_wav: bytes
) -> None:
    workload = Workload(SOAK_QUESTION, SOAK_COLLECTION, question_wav, llm_every=6, voice_every=12)
    faults = fault_schedule(FAULT_EVERY_S, platform.bridge, platform.nats)
    settings = nats_test_settings(platform.nats.url)
    async with SoakClient(platform.http_url, settings, workload) as client:
        result = await run_soak(
            client, REQUESTS, CLIENTS, faults=faults, duration_s=5 * FAULT_EVERY_S, grace_s=15
        )
        recovered = await wait_until_answered(client, 180, first_index=10_000)
        afterwards = await every_kind_answered(client, first_index=20_000)
    print(result.describe())

    for fault in faults:
        assert fault.happened_at_s is not None, fault
        assert not fault.result.startswith("failed"), fault
    totals = result.totals()
    assert totals["requests"] == REQUESTS
    assert result.failures() == [], result.failures()
    assert totals["lost"] == 0
    assert totals["duplicated"] == 0
    # Every request answered, or given an error the client can act on: the platform's
    # shape with a code (a request on the killed handler replica too: the proxy's
    # middleware answers for it), or (NATS) a request the stream never took while the
    # server was down.
    assert totals["proxy_5xx"] == 0, result.rows()
    assert sum(totals[k] for k in ("answered", "clear_errors", "not_accepted")) == REQUESTS
    assert totals["answered"] >= REQUESTS // 2, result.rows()
    assert all(o.status == "answered" for o in recovered), recovered
    assert [(o.transport, o.kind, o.status) for o in afterwards] == [
        (o.transport, o.kind, "answered") for o in afterwards
    ]


# --- the counting itself, without a stack ---------------------------------------------


def test_a_reply_is_answered_only_for_its_own_request() -> None:
    from handler_base.errors import UnavailableError
    from handler_base.messages import ChatResponse
    from handler_base.messaging import encode_error

    mine = ChatResponse(response="yes", request_id="r-1").model_dump_json().encode()
    assert classify_reply(mine, None, ChatResponse, "r-1")[0] == "answered"
    assert classify_reply(mine, None, ChatResponse, "r-2")[0] == "lost"
    body, headers = encode_error(UnavailableError("busy"))
    assert classify_reply(body, headers, ChatResponse, "r-1")[:2] == ("error", "unavailable")
    assert classify_reply(body, None, ChatResponse, "r-1")[:2] == ("error", "unavailable")
    assert classify_reply(b"Internal Server Error", None, ChatResponse, "r-1")[0] == "lost"


def test_duplicates_and_statuses_are_counted_per_transport_and_kind() -> None:
    outcomes = [
        Outcome(0, "nats", "chat", "a", "answered", 0.1, replies=2),
        Outcome(1, "http", "chat", "b", "proxy_error", 0.2, code="500"),
        Outcome(2, "nats", "voice", "c", "lost", 9.0, replies=0),
        Outcome(3, "http", "chat", "d", "answered", 0.3),
    ]
    result = SoakResult(outcomes, [], 1.0)
    totals = result.totals()
    assert (totals["requests"], totals["answered"], totals["proxy_5xx"]) == (4, 2, 1)
    assert (totals["lost"], totals["duplicated"]) == (1, 1)
    assert [o.request_id for o in result.failures()] == ["a", "c"]
    http_chat = next(r for r in result.rows() if (r["transport"], r["kind"]) == ("http", "chat"))
    assert (http_chat["requests"], http_chat["p50_ms"]) == (2, 300.0)


def test_memory_growth_is_judged_against_50_mb_plus_a_tenth() -> None:
    rows = memory_growth({"a": 100.0, "b": 1000.0, "c": 50.0}, {"a": 161.0, "b": 1149.0, "c": None})
    assert [(r["process"], r["ok"]) for r in rows] == [("a", False), ("b", True), ("c", False)]
