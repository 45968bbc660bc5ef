"""The request guard on the real Serve: the real chat app and model apps, through the proxy.

API keys reach a replica through its process environment. Production sets ``API_KEYS``
where the cluster starts (or ``SECRETS_DIR``); this test gives only its own replicas the
variable, through ``runtime_env``, so the session's other apps stay open: a guarded chat
app, and a guarded copy of the embeddings app under a name of its own (the chat app
reaches the session's model apps, ``model_apps``, through handles).

The answers Serve's proxy writes itself (a full queue, a path no app owns, a replica that
dies under a request) are checked on a small app that holds requests as long as it is
told, so that its queue can be filled and its replica killed at a known moment.
"""

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI
from ray import serve

from chat_handler.deployment import ChatArgs, ChatDeployment
from handler_base.clients import EmbeddingsClient
from handler_base.deployment import CHAT_BODY_BYTES
from handler_base.testing.platform import SharedApps
from handler_base.testing.ray_fixtures import LocalServe, pickle_by_value
from handler_base.testing.soak import kill_replica
from ray_inference import embeddings

pytestmark = pytest.mark.integration

pickle_by_value(sys.modules[__name__])

KEYS = ("guard-key-one-5b0e93", "guard-key-two-c41d77")
KEYED = {"Authorization": f"Bearer {KEYS[0]}"}
COLLECTION = "guarded"
FACT = "The Q-7 lantern glows amber and weighs 212 grams."
QUESTION = "What colour does the Q-7 lantern glow?"
GUARDED_EMBEDDINGS = "embeddings-guarded"
WORKING, WAITING = 2, 2
"""The guarded chat replica's admission: small, so that a burst of requests passes it."""


HOLD_APP = "hold"
HOLD_RETRY_AFTER_S = 3
hold_api = FastAPI()


@hold_api.post("/hold")
async def hold(seconds: float, marker: str = "") -> dict[str, float]:
    """Note the arrival in ``marker`` (a file), then answer after ``seconds``."""
    if marker:
        await asyncio.to_thread(Path(marker).write_text, "in")
    await asyncio.sleep(seconds)
    return {"held_s": seconds}


@serve.ingress(hold_api)
class Hold:
    """One request at a time, one more waits in Serve's queue: the next is Serve's to shed."""


def keyed_env() -> dict[str, Any]:
    return {"env_vars": {"API_KEYS": ",".join(KEYS)}}


@pytest.fixture(scope="module")
def urls(
    serve_instance: LocalServe, model_apps: SharedApps, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A guarded embeddings app and a guarded chat app beside the models; the proxy's URL."""
    from ray import serve

    embeddings_args = embeddings.EmbeddingsArgs(profile="cpu")
    options = embeddings_args.deployment_options()
    options["ray_actor_options"] = {**options["ray_actor_options"], "runtime_env": keyed_env()}
    serve.run(
        embeddings.EmbeddingsDeployment.options(**options).bind(  # type: ignore[attr-defined]
            embeddings_args
        ),
        name=GUARDED_EMBEDDINGS,
        route_prefix=f"/{GUARDED_EMBEDDINGS}",
    )
    args = ChatArgs(
        num_cpus=0.1,
        max_ongoing_requests=WORKING,
        max_queued_requests=WAITING,
        retry_after_s=2,
        milvus_uri=str(tmp_path_factory.mktemp("guard-milvus") / "milvus.db"),
    )
    chat_options = args.deployment_options()
    chat_options["ray_actor_options"] = {
        **chat_options["ray_actor_options"],
        "runtime_env": keyed_env(),
    }
    serve.run(
        ChatDeployment.options(**chat_options).bind(args),  # type: ignore[attr-defined]
        name="chat-guarded",
        route_prefix="/chat-guarded",
    )
    try:
        yield serve_instance.http_url
    finally:
        for name in ("chat-guarded", GUARDED_EMBEDDINGS):
            serve.delete(name)


@pytest.fixture
async def http(urls: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{urls}/chat-guarded", timeout=300) as client:
        yield client


async def chunk_count(http: httpx.AsyncClient) -> int:
    response = await http.get("/knowledge/collections", headers=KEYED)
    assert response.status_code == 200, response.text
    found = {c["name"]: c["count"] for c in response.json()["collections"]}
    return int(found.get(COLLECTION, 0))


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code


async def test_no_key_or_a_wrong_one_is_unauthorized_and_nothing_is_ingested(
    http: httpx.AsyncClient,
) -> None:
    ingest = {"collection": COLLECTION, "documents": [{"id": "q7", "text": FACT}]}
    before = await chunk_count(http)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": KEYS[0] + "x"}):
        refused = await http.post("/knowledge/documents", json=ingest, headers=headers)
        assert_error(refused, 401, "unauthorized")
        assert refused.headers["www-authenticate"] == "Bearer"
        for key in KEYS:
            assert key not in refused.text
        assert_error(
            await http.post("", json={"query": QUESTION}, headers=headers), 401, "unauthorized"
        )
    assert await chunk_count(http) == before
    # Health stays open for probes.
    assert (await http.get("/-/healthz")).status_code == 200


async def test_an_accepted_key_in_either_header_is_served(http: httpx.AsyncClient) -> None:
    ingest = {"collection": COLLECTION, "documents": [{"id": "q7", "text": FACT}]}
    stored = await http.post("/knowledge/documents", json=ingest, headers={"X-API-Key": KEYS[1]})
    assert stored.status_code == 200, stored.text
    assert await chunk_count(http) >= 1
    answer = await http.post(
        "", json={"query": QUESTION, "collection": COLLECTION, "top_n": 1}, headers=KEYED
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["sources"][0]["metadata"]["doc_id"] == "q7"


async def test_a_model_app_needs_the_key_over_http_but_not_over_its_handle(urls: str) -> None:
    body = {"input": ["a lantern"], "model": "all-MiniLM-L6-v2"}
    async with httpx.AsyncClient(base_url=f"{urls}/{GUARDED_EMBEDDINGS}", timeout=120) as client:
        assert_error(await client.post("/v1/embeddings", json=body), 401, "unauthorized")
        served = await client.post("/v1/embeddings", json=body, headers=KEYED)
    assert served.status_code == 200, served.text
    assert len(served.json()["data"][0]["embedding"]) == 384
    async with EmbeddingsClient(mode="handle", app_name=GUARDED_EMBEDDINGS) as by_handle:
        assert len(await by_handle.embed_one("a lantern")) == 384


async def test_past_capacity_requests_are_shed_in_the_shape_and_the_app_recovers(
    http: httpx.AsyncClient,
) -> None:
    # Serve lets 2 x (working + waiting) into the replica, room for those the guard sheds
    # (see HandlerArgs.deployment_options): a burst within that meets only the guard.
    burst = 2 * (WORKING + WAITING)
    question = {"query": QUESTION, "collection": COLLECTION, "top_n": 1}
    responses = await asyncio.gather(
        *(http.post("", json=question, headers=KEYED) for _ in range(burst))
    )
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) >= burst - (WORKING + WAITING), statuses
    for response in responses:
        if response.status_code == 503:
            assert_error(response, 503, "unavailable")  # the guard's, not Serve's plain text
            assert response.headers["retry-after"] == "2"
        else:
            assert response.json()["response"]
    # Once the burst is over, a request is answered normally.
    after = await http.post("", json=question, headers=KEYED)
    assert after.status_code == 200, after.text


async def test_a_body_over_the_limit_is_too_large_declared_or_chunked(
    http: httpx.AsyncClient,
) -> None:
    oversized = json.dumps({"query": "x" * CHAT_BODY_BYTES}).encode()
    assert_error(await http.post("", content=oversized, headers=KEYED), 413, "too_large")

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(oversized), 64 * 1024):
            yield oversized[start : start + 64 * 1024]

    chunked = await http.post(
        "", content=chunks(), headers={**KEYED, "Content-Type": "application/json"}
    )
    assert_error(chunked, 413, "too_large")
    # The service answers the next request.
    assert (await http.get("/knowledge/collections", headers=KEYED)).status_code == 200


def test_the_keys_are_in_no_log_of_the_replicas_or_the_proxy(urls: str) -> None:
    import ray

    node = ray._private.worker._global_node
    assert node is not None
    logs = Path(node.get_logs_dir_path()) / "serve"
    files = [p for p in logs.glob("*.log") if p.name.startswith(("replica_", "proxy_"))]
    assert any("ChatDeployment" in p.name for p in files), sorted(p.name for p in files)
    for path in files:
        text = path.read_text(errors="replace")
        for key in KEYS:
            assert key not in text, path.name


@pytest.fixture(scope="module")
def hold_url(serve_instance: LocalServe) -> Iterator[str]:
    deployment = serve.deployment(
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=1,
        max_queued_requests=1,
        backpressure_config={"retry_after_s": HOLD_RETRY_AFTER_S},
    )(Hold)
    serve.run(cast(Any, deployment).bind(), name=HOLD_APP, route_prefix=f"/{HOLD_APP}")
    try:
        yield f"{serve_instance.http_url}/{HOLD_APP}"
    finally:
        serve.delete(HOLD_APP)


async def holding(
    client: httpx.AsyncClient, seconds: float, marker: Path
) -> asyncio.Task[httpx.Response]:
    """A request held ``seconds`` in the hold replica, once it is there (``marker`` exists)."""
    held = asyncio.create_task(
        client.post("/hold", params={"seconds": seconds, "marker": str(marker)})
    )
    deadline = time.monotonic() + 60
    while not await asyncio.to_thread(marker.exists):
        assert time.monotonic() < deadline, "the request never reached the replica"
        await asyncio.sleep(0.1)
    return held


async def test_a_path_no_app_owns_is_not_found_in_the_shape(urls: str) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.get(f"{urls}/no-such-app/anything")
    assert_error(response, 404, "not_found")
    assert "/no-such-app/anything" in response.json()["error"]["message"]


async def test_serve_sheds_past_its_own_queue_in_the_shape_with_retry_after(
    hold_url: str, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(base_url=hold_url, timeout=120) as client:
        working = await holding(client, 10, tmp_path / "in")
        waiting = asyncio.create_task(client.post("/hold", params={"seconds": 0}))
        await asyncio.sleep(2)  # in Serve's queue, which holds one
        shed = await client.post("/hold", params={"seconds": 0})
        assert_error(shed, 503, "unavailable")
        assert shed.headers["retry-after"] == str(HOLD_RETRY_AFTER_S)
        assert "backpressure" in shed.json()["error"]["message"]  # Serve's words, kept
        # The two it took are answered.
        assert (await working).status_code == 200
        assert (await waiting).json() == {"held_s": 0}


async def test_a_request_whose_replica_dies_is_answered_in_the_shape(
    hold_url: str, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(base_url=hold_url, timeout=120) as client:
        doomed = await holding(client, 60, tmp_path / "in")
        await asyncio.to_thread(kill_replica, HOLD_APP)
        lost = await doomed
        assert_error(lost, 500, "internal")
        assert "stopped before it answered" in lost.json()["error"]["message"]
        # Serve starts a new replica, which answers.
        deadline = time.monotonic() + 180
        while True:
            after = await client.post("/hold", params={"seconds": 0})
            if after.status_code == 200:
                break
            assert_error(after, 503, "unavailable")  # no replica yet, said in the shape
            assert time.monotonic() < deadline, after.text
            await asyncio.sleep(1)
