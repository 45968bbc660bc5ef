"""Documents ingested by a pipeline started over NATS, then cited by a chat answer.

Everything is real: a nats-server, the session's Ray cluster with its model apps
(``model_apps``) and a chat app (which owns a Milvus Lite database in a temporary
folder), and kfp's local subprocess runner executing both steps of
``document-ingestion``, which store the documents through the chat app's knowledge API.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from chat_handler.deployment import build_app
from handler_base.messages import ChatResponse
from handler_base.messaging import flush
from handler_base.settings import Settings
from handler_base.testing.platform import SharedApps
from pipeline_bridge.pipelines import LocalRunner, PipelineService, PipelineServiceConfig

pytestmark = pytest.mark.integration

COLLECTION = "pipeline_docs"
MANUAL = """# Quillfeather lighthouse

The Quillfeather lighthouse flashes violet every 11 seconds.
Its keeper, Mira Delacroix, winds the clockwork lens each dusk.
"""
NOTE = "The ferry to Orrin Island leaves at 7:40 from pier 3."


@pytest.fixture(scope="module")
def chat_url(model_apps: SharedApps, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from ray import serve

    milvus_uri = str(tmp_path_factory.mktemp("pipeline-milvus") / "milvus.db")
    serve.run(build_app({"milvus_uri": milvus_uri}), name="chat", route_prefix="/chat")
    try:
        yield f"{model_apps.http_url}/chat"
    finally:
        serve.delete("chat")


@pytest_asyncio.fixture
async def service(
    chat_url: str, nats_client: NATS, tmp_path: Path
) -> AsyncIterator[PipelineService]:
    started = PipelineService(
        LocalRunner(tmp_path / "runs"),
        settings=Settings(chat_url=chat_url),
        config=PipelineServiceConfig(poll_interval_s=0.5, allowed_folders=[tmp_path]),
    )
    await started.start(nats_client)
    yield started
    await started.stop()


async def run_over_nats(nc: NATS, params: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """Trigger ``document-ingestion``; return its run id and its events up to the last."""
    events: list[dict[str, Any]] = []
    ended = asyncio.Event()

    async def on_event(msg: Msg) -> None:
        event = json.loads(msg.data)
        events.append(event)
        if event["data"]["state"] in ("succeeded", "failed"):
            ended.set()

    sub = await nc.subscribe("ai.pipeline.status.>", cb=on_event)
    await flush(nc)
    try:
        body = {"pipeline": "document-ingestion", "params": params, "request_id": "docs-1"}
        reply = await nc.request("ai.pipeline.trigger", json.dumps(body).encode(), timeout=60)
        accepted = json.loads(reply.data)
        assert accepted["state"] == "submitted", accepted
        await asyncio.wait_for(ended.wait(), 300)
    finally:
        await sub.unsubscribe()
    return accepted["run_id"], [e for e in events if e["data"]["run_id"] == accepted["run_id"]]


async def test_documents_ingested_by_a_pipeline_over_nats_are_cited(
    service: PipelineService, nats_client: NATS, chat_url: str, tmp_path: Path
) -> None:
    manual = tmp_path / "quillfeather.md"
    manual.write_text(MANUAL, encoding="utf-8")
    params = {
        "collection": COLLECTION,
        "paths": [str(manual)],
        "documents": [{"id": "ferry", "text": NOTE, "metadata": {"title": "Ferry times"}}],
    }
    run_id, events = await run_over_nats(nats_client, params)
    assert [e["data"]["state"] for e in events] == ["submitted", "running", "succeeded"], events
    assert "error" not in events[-1]["data"]

    async with httpx.AsyncClient(base_url=chat_url, timeout=300) as http:
        collections = (await http.get("/knowledge/collections")).json()["collections"]
        assert {"name": COLLECTION, "count": 2} in collections

        response = await http.post(
            "",
            json={
                "query": "What colour does the Quillfeather lighthouse flash?",
                "collection": COLLECTION,
                "top_n": 1,
            },
        )
    assert response.status_code == 200, response.text
    answer = ChatResponse.model_validate(response.json())
    assert answer.sources[0].metadata["doc_id"] == manual.as_posix()
    assert answer.sources[0].metadata["title"] == "Quillfeather lighthouse"
    assert "violet" in answer.sources[0].text
    assert "violet" in answer.response.lower()

    # The same trigger again (same request_id) is the same run: nothing is ingested twice.
    reply = await nats_client.request(
        "ai.pipeline.trigger",
        json.dumps(
            {"pipeline": "document-ingestion", "params": params, "request_id": "docs-1"}
        ).encode(),
        timeout=60,
    )
    assert json.loads(reply.data) == {"run_id": run_id, "state": "succeeded"}


async def test_a_pipeline_over_nats_with_a_missing_file_fails_with_its_error(
    service: PipelineService, nats_client: NATS, tmp_path: Path
) -> None:
    missing = tmp_path / "not-here.md"
    _, events = await run_over_nats(nats_client, {"paths": [str(missing)]})
    assert [e["data"]["state"] for e in events] == ["submitted", "running", "failed"]
    error = events[-1]["data"]["error"]
    assert "load-and-chunk" in error
    assert str(missing) in error
