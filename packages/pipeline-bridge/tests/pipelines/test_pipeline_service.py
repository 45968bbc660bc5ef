"""``PipelineService`` on a real nats-server, running pipelines with the local runner.

The runs here fail or stall before any document is stored, so no Ray cluster is needed;
the run that stores documents and gets them cited is in ``test_pipeline_ingestion.py``.
"""

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from handler_base.messages import PipelineRunState, PipelineStatusEvent
from handler_base.messaging import flush
from handler_base.settings import Settings
from pipeline_bridge.pipelines import LocalRunner, PipelineService, PipelineServiceConfig

pytestmark = pytest.mark.integration

TRIGGER = "ai.pipeline.trigger"


@pytest.fixture
def silent_chat_url() -> Iterator[str]:
    """A knowledge API that accepts connections and never answers: runs stay running."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/chat"


class Events:
    """The status events received, by run."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any], Msg]] = []
        self.changed = asyncio.Event()

    async def on_message(self, msg: Msg) -> None:
        self.received.append((msg.subject, json.loads(msg.data), msg))
        self.changed.set()

    def of(self, run_id: str) -> list[dict[str, Any]]:
        return [event for _, event, _ in self.received if event["data"]["run_id"] == run_id]

    async def until(self, run_id: str, state: str, timeout: float = 240) -> dict[str, Any]:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while True:
                for event in self.of(run_id):
                    if event["data"]["state"] == state:
                        return event
                self.changed.clear()
                await self.changed.wait()


@pytest_asyncio.fixture
async def events(nats_client: NATS) -> AsyncIterator[Events]:
    received = Events()
    sub = await nats_client.subscribe("ai.pipeline.status.>", cb=received.on_message)
    await flush(nats_client)
    yield received
    await sub.unsubscribe()


async def make_service(
    nats_client: NATS, tmp_path: Path, chat_url: str = "http://127.0.0.1:9/chat", **config: Any
) -> PipelineService:
    service = PipelineService(
        LocalRunner(tmp_path / "runs", stop_grace_s=2.0),
        settings=Settings(chat_url=chat_url),
        config=PipelineServiceConfig(
            poll_interval_s=0.2, **{"allowed_folders": [tmp_path], **config}
        ),
    )
    await service.start(nats_client)
    return service


async def trigger(nc: NATS, body: Any) -> dict[str, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = await nc.request(TRIGGER, data, timeout=60)
    answer: dict[str, Any] = json.loads(reply.data)
    return answer


async def test_a_failing_pipeline_is_reported_failed_with_its_error(
    nats_client: NATS, events: Events, tmp_path: Path
) -> None:
    service = await make_service(nats_client, tmp_path)
    missing = tmp_path / "missing.md"
    try:
        accepted = await trigger(
            nats_client, {"pipeline": "document-ingestion", "params": {"paths": [str(missing)]}}
        )
        assert accepted["state"] == "submitted"
        run_id = accepted["run_id"]
        failed = await events.until(run_id, "failed")
    finally:
        await service.stop()

    assert [e["type"] for e in events.of(run_id)] == [
        "ai.pipeline.run.submitted",
        "ai.pipeline.run.running",
        "ai.pipeline.run.failed",
    ]
    assert "load-and-chunk" in failed["data"]["error"]
    assert str(missing) in failed["data"]["error"]
    event = PipelineStatusEvent.model_validate(failed)
    assert event.specversion == "1.0"
    assert event.data.pipeline == "document-ingestion"
    subject, _, msg = next(r for r in events.received if r[1]["id"] == failed["id"])
    assert subject == f"ai.pipeline.status.{run_id}"
    assert msg.headers is not None
    assert msg.headers["Content-Type"] == "application/cloudevents+json"
    assert service.run_status(run_id).state is PipelineRunState.FAILED


async def test_bad_triggers_get_errors_and_the_service_keeps_serving(
    nats_client: NATS, tmp_path: Path
) -> None:
    service = await make_service(nats_client, tmp_path)
    try:
        cases: list[tuple[Any, str]] = [
            (b"{not json", "invalid_request"),
            ({"params": {}}, "invalid_request"),
            ({"pipeline": "no-such-pipeline", "params": {}}, "not_found"),
            ({"pipeline": "document-ingestion", "params": {}}, "invalid_request"),
            ({"pipeline": "document-ingestion", "params": {"paths": 3}}, "invalid_request"),
            (
                {"pipeline": "document-ingestion", "params": {"paths": ["x" * 70_000]}},
                "too_large",
            ),
        ]
        for body, code in cases:
            reply = await nats_client.request(
                TRIGGER, body if isinstance(body, bytes) else json.dumps(body).encode(), timeout=30
            )
            answer = json.loads(reply.data)
            assert answer["error"]["code"] == code, (body, answer)
            assert reply.headers is not None
            assert reply.headers["Nats-Service-Error-Code"]
        assert service.active_runs == 0
        # Still serving: a good trigger starts a run.
        gone = str(tmp_path / "gone.md")
        accepted = await trigger(
            nats_client, {"pipeline": "document-ingestion", "params": {"paths": [gone]}}
        )
        assert accepted["state"] == "submitted"
    finally:
        await service.stop()


async def test_the_same_request_id_gets_the_same_run_and_the_cap_holds(
    nats_client: NATS, events: Events, tmp_path: Path, silent_chat_url: str
) -> None:
    service = await make_service(
        nats_client, tmp_path, silent_chat_url, max_concurrent_runs=1, stop_timeout_s=1.0
    )
    body = {
        "pipeline": "document-ingestion",
        "params": {"documents": [{"text": "The lamp is green."}]},
        "request_id": "ingest-1",
    }
    try:
        first, again = await asyncio.gather(trigger(nats_client, body), trigger(nats_client, body))
        assert first["run_id"] == again["run_id"]
        await events.until(first["run_id"], "running")
        repeat = await trigger(nats_client, body)
        assert repeat == {"run_id": first["run_id"], "state": "running"}
        assert len(list((tmp_path / "runs").iterdir())) == 1  # one run, not three

        other = await trigger(nats_client, {**body, "request_id": "ingest-2"})
        assert other["error"]["code"] == "unavailable"
        reused = await trigger(nats_client, {**body, "params": {"paths": [str(tmp_path / "b")]}})
        assert reused["error"]["code"] == "invalid_request"
        assert "ingest-1" in reused["error"]["message"]
    finally:
        # The run waits on a server that never answers: stop() stops it.
        await service.stop()
    stopped = await events.until(first["run_id"], "failed", timeout=30)
    assert stopped["data"]["error"] == "the pipeline service stopped before the run ended"
    assert service.active_runs == 0


async def test_trigger_paths_must_be_under_the_allowed_folders(
    nats_client: NATS, tmp_path: Path
) -> None:
    inbox = tmp_path / "data" / "inbox"
    inbox.mkdir(parents=True)
    inside = inbox / "a.md"
    inside.write_text("The lamp is green.", encoding="utf-8")
    secret = tmp_path / "secret.md"
    secret.write_text("not for triggers", encoding="utf-8")
    (inbox / "link.md").symlink_to(secret)
    # The default: DATA_DIR/inbox and nothing else.
    service = PipelineService(
        LocalRunner(tmp_path / "runs", stop_grace_s=2.0),
        settings=Settings(chat_url="http://127.0.0.1:9/chat", data_dir=tmp_path / "data"),
        config=PipelineServiceConfig(poll_interval_s=0.2),
    )
    await service.start(nats_client)
    try:
        refused = {
            "relative": ("a.md", "must be absolute"),
            "outside": (str(secret), "outside the folders"),
            "climbing out": (str(inbox / ".." / ".." / "secret.md"), "outside the folders"),
            "a link out": (str(inbox / "link.md"), "outside the folders"),
        }
        for case, (path, why) in refused.items():
            params = {"documents": [{"text": "x"}], "paths": [str(inside), path]}
            answer = await trigger(
                nats_client, {"pipeline": "document-ingestion", "params": params}
            )
            assert answer["error"]["code"] == "invalid_request", (case, answer)
            assert why in answer["error"]["message"], (case, answer)
        assert service.active_runs == 0
        accepted = await trigger(
            nats_client, {"pipeline": "document-ingestion", "params": {"paths": [str(inside)]}}
        )
        assert accepted["state"] == "submitted", accepted
    finally:
        await service.stop()

    nothing = PipelineServiceConfig(allowed_folders=[])
    assert nothing.readable_folders(Settings()) == []
