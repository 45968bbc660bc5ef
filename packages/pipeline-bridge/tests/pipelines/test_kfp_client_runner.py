"""``KFPClientRunner`` (``kfp.Client``) against a STAND-IN Kubeflow Pipelines API server.

A real KFP API server needs a Kubernetes cluster (Argo, MySQL, MinIO), which cannot run
on this machine. So the server here is a stand-in written in this test: a small HTTP
server on 127.0.0.1 that answers the KFP v2beta1 REST routes ``kfp.Client`` uses
(healthz, experiments, create run, get run, terminate run) the way the real one does,
and records what it was sent. The client side is the real ``kfp.Client``; what is
proven is that the runner sends the compiled pipeline and its arguments, and reads the
run's states and its error. Runs on a real cluster are out of reach of these tests.
"""

import json
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from nats.aio.client import Client as NATS

from handler_base.errors import NotFoundError, UnavailableError
from handler_base.messages import PipelineRunState, PipelineTrigger
from handler_base.messaging import flush
from handler_base.settings import Settings
from pipeline_bridge.pipelines import (
    KFPClientRunner,
    PipelineService,
    PipelineServiceConfig,
    get_pipeline,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[4]
API = "/apis/v2beta1"


@dataclass
class StandInRun:
    body: dict[str, Any]
    states: list[str]
    """States the run goes through, one per ``get run``; the last one stays."""
    error: str | None = None
    polls: int = 0


@dataclass
class StandInKFP:
    """What the stand-in server knows: experiments, runs, and the requests it got."""

    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, StandInRun] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    next_states: list[str] = field(default_factory=lambda: ["PENDING", "RUNNING", "SUCCEEDED"])
    next_error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Any:
        with self.lock:
            self.requests.append((method, path))
            if path == f"{API}/healthz":
                return 200, {"commit_sha": "stand-in", "tag_name": "2.x", "multi_user": False}
            if path == f"{API}/experiments" and method == "GET":
                return 200, self._list_experiments(query)
            if path == f"{API}/experiments" and method == "POST":
                experiment = {
                    "experiment_id": uuid.uuid4().hex,
                    "display_name": body["display_name"],
                    "storage_state": "AVAILABLE",
                }
                self.experiments[experiment["experiment_id"]] = experiment
                return 200, experiment
            if path == f"{API}/runs" and method == "POST":
                run_id = str(uuid.uuid4())
                self.runs[run_id] = StandInRun(
                    body=body, states=list(self.next_states), error=self.next_error
                )
                return 200, self._run(run_id, "PENDING")
            if path.startswith(f"{API}/runs/"):
                run_id, _, action = path.removeprefix(f"{API}/runs/").partition(":")
                run = self.runs.get(run_id)
                if run is None:
                    return 404, {"error": "run not found", "code": 5, "message": "not found"}
                if action == "terminate":
                    run.states = ["CANCELED"]
                    return 200, {}
                state = run.states[min(run.polls, len(run.states) - 1)]
                run.polls += 1
                return 200, self._run(run_id, state)
            return 404, {"error": f"no route {method} {path}", "code": 5}

    def _list_experiments(self, query: dict[str, list[str]]) -> dict[str, Any]:
        wanted = None
        if "filter" in query:
            predicates = json.loads(query["filter"][0]).get("predicates", [])
            for predicate in predicates:
                if predicate.get("key") == "display_name":
                    wanted = predicate.get("string_value") or predicate.get("stringValue")
        found = [e for e in self.experiments.values() if wanted in (None, e["display_name"])]
        return {"experiments": found, "total_size": len(found)} if found else {}

    def _run(self, run_id: str, state: str) -> dict[str, Any]:
        run = self.runs[run_id]
        answer: dict[str, Any] = {
            "run_id": run_id,
            "display_name": run.body.get("display_name"),
            "experiment_id": run.body.get("experiment_id"),
            "state": state,
            "created_at": "2026-01-01T00:00:00Z",
        }
        if state == "FAILED" and run.error:
            answer["error"] = {"code": 2, "message": run.error}
        return answer


@pytest.fixture
def stand_in() -> Iterator[tuple[str, StandInKFP]]:
    state = StandInKFP()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            status, answer = state.answer(self.command, url.path, parse_qs(url.query), body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


async def test_a_run_is_created_from_the_compiled_pipeline_and_followed(
    stand_in: tuple[str, StandInKFP],
) -> None:
    host, server = stand_in
    runner = KFPClientRunner(host, experiment="tests", poll_interval_s=0.05)
    definition = get_pipeline("document-ingestion")
    arguments = definition.arguments(
        {"paths": ["/data/a.md"], "collection": "manuals"},
        Settings(chat_url="http://chat.example:8000/chat"),
    )
    run_id = await runner.submit(definition, arguments)
    created = server.runs[run_id].body
    committed = yaml.safe_load((REPO / "deploy/pipelines/document-ingestion.yaml").read_text())
    assert created["pipeline_spec"] == committed
    assert created["runtime_config"]["parameters"] == arguments
    assert server.experiments[created["experiment_id"]]["display_name"] == "tests"

    assert (await runner.status(run_id)).state is PipelineRunState.SUBMITTED
    assert (await runner.status(run_id)).state is PipelineRunState.RUNNING
    final = await runner.wait(run_id, timeout=30)
    assert final.state is PipelineRunState.SUCCEEDED
    assert final.error is None

    # A second run reuses the experiment rather than making another.
    await runner.submit(definition, arguments)
    assert len(server.experiments) == 1
    await runner.aclose()


async def test_a_failed_run_reports_the_servers_error(stand_in: tuple[str, StandInKFP]) -> None:
    host, server = stand_in
    server.next_states = ["RUNNING", "FAILED"]
    server.next_error = "load-and-chunk: cannot read /data/missing.md"
    runner = KFPClientRunner(host, poll_interval_s=0.05)
    definition = get_pipeline("document-ingestion")
    run_id = await runner.submit(
        definition, definition.arguments({"paths": ["/data/missing.md"]}, Settings())
    )
    final = await runner.wait(run_id, timeout=30)
    assert final.state is PipelineRunState.FAILED
    assert final.error == "load-and-chunk: cannot read /data/missing.md"

    await runner.cancel(run_id)
    assert ("POST", f"{API}/runs/{run_id}:terminate") in server.requests
    with pytest.raises(NotFoundError):
        await runner.status("no-such-run")
    await runner.aclose()


async def test_an_unreachable_server_is_unavailable() -> None:
    runner = KFPClientRunner("http://127.0.0.1:9", poll_interval_s=0.05)
    definition = get_pipeline("document-ingestion")
    with pytest.raises(UnavailableError, match=re.escape("KFP server at http://127.0.0.1:9")):
        await runner.submit(definition, definition.arguments({"paths": ["a.md"]}, Settings()))
    await runner.aclose()


async def test_the_service_reports_a_kfp_run_over_nats(
    stand_in: tuple[str, StandInKFP], nats_client: NATS
) -> None:
    host, server = stand_in
    server.next_states = ["PENDING", "RUNNING", "RUNNING", "FAILED"]
    server.next_error = "the step's pod was evicted"
    config = PipelineServiceConfig(
        runner="kfp", kfp_host=host, poll_interval_s=0.05, allowed_folders=[Path("/data")]
    )
    service = PipelineService(config=config)
    await service.start(nats_client)
    events: list[dict[str, Any]] = []
    sub = await nats_client.subscribe("ai.pipeline.status.>", cb=_collect(events))
    await flush(nats_client)
    try:
        reply = await nats_client.request(
            "ai.pipeline.trigger",
            PipelineTrigger(pipeline="document-ingestion", params={"paths": ["/data/a.md"]})
            .model_dump_json()
            .encode(),
            timeout=30,
        )
        accepted = json.loads(reply.data)
        assert accepted["state"] == "submitted"
        status = await service.wait(accepted["run_id"])
        await flush(nats_client)
    finally:
        await sub.unsubscribe()
        await service.stop()
    assert status.state is PipelineRunState.FAILED
    assert [e["type"] for e in events] == [
        "ai.pipeline.run.submitted",
        "ai.pipeline.run.running",
        "ai.pipeline.run.failed",
    ]
    assert events[-1]["data"]["error"] == "the step's pod was evicted"
    assert {e["data"]["run_id"] for e in events} == {accepted["run_id"]}


def _collect(events: list[dict[str, Any]]) -> Any:
    async def on_event(msg: Any) -> None:
        events.append(json.loads(msg.data))

    return on_event
