"""The cluster path for real: a multi-node Ray cluster runs the rendered cluster layout.

On this machine, every node a process group of its own, all on 127.0.0.1
(:mod:`handler_base.testing.cluster`):

- the head runs from a bare environment holding Ray only, and offers the resource
  ``head``: the handlers, the NATS bridge and the pipeline service land there and
  install our wheels *and every dependency* from a real package index (pypiserver, no
  fallback to a public index, pip told to read no other configuration);
- two workers run from the workspace's environment (the image of a model node) and
  offer ``worker``: the model apps land there.

The config is what ``aictl deploy`` renders and applies (the cpu profile in the cluster
layout), through the head's dashboard, as ``serve deploy`` and KubeRay do. Shown: the
placement, chat and voice answered over HTTP and over NATS, a pipeline trigger served,
then a worker killed and its replicas rescheduled on the other, answering again; and the
clear errors of a cluster without the head resource, an index missing a dependency and a
bridge that cannot reach NATS.
"""

import asyncio
import base64
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from aictl.cli import app as cli
from aictl.serve_api import ApplicationState, ServeApi
from aictl.wheelhouse import (
    dependency_closure,
    download_wheels,
    installed_by_cluster,
    third_party,
)
from handler_base.messages import (
    ChatRequest,
    ChatResponse,
    PipelineTrigger,
    VoiceRequest,
    VoiceResponse,
)
from handler_base.messaging import connect, request
from handler_base.settings import Settings
from handler_base.testing.cluster import LocalCluster, RayNode, bare_ray_environment
from handler_base.testing.package_index import LocalIndex, build_wheels, package_index
from handler_base.testing.platform import platform_nats
from handler_base.testing.ray_fixtures import LOOPBACK, free_port
from handler_base.testing.speech import speak
from ray_inference.catalog import MODEL_APPS as MODEL_SPECS

pytestmark = [
    pytest.mark.integration,
    # Installs from the index, models loading on two workers, a worker's replicas moved.
    pytest.mark.timeout(2400),
    pytest.mark.filterwarnings("ignore:'crypt' is deprecated:DeprecationWarning"),
]

ROOT = Path(__file__).resolve().parents[1]
MODEL_APPS = tuple(spec.name for spec in MODEL_SPECS)
HANDLERS = ("chat", "voice", "bridge")
VERSION = version("handler-base")
DEPLOY_TIMEOUT_S = 1500.0
COLLECTION = "cluster"
FACT = "The KT-9 kite winch pulls 350 kilograms and ships in yellow."
QUESTION = "How much does the KT-9 kite winch pull?"
DOCUMENTS = [
    {"id": "kt9", "text": FACT, "metadata": {"title": "KT-9 kite winch"}},
    {"id": "desk", "text": "The help desk answers the phone from 8 until 4 on weekdays."},
]
NODE_ENV = {
    # A node of a real cluster knows no other index: pip reads no configuration here
    # (this machine's pip.conf names other wheel folders).
    "PIP_CONFIG_FILE": os.devnull,
    "HF_HUB_OFFLINE": "1",
}


def publish_everything(index: LocalIndex) -> None:
    """Our wheels and every third-party wheel the handlers need, into the index's folder."""
    build_wheels(ROOT / "packages", index.directory)
    download_wheels(third_party(dependency_closure(installed_by_cluster())), index.directory)


@dataclass
class ClusterStack:
    cluster: LocalCluster
    head: RayNode
    workers: list[RayNode]
    index: LocalIndex
    nats_url: str
    serve_url: str

    def applications(self) -> list[ApplicationState]:
        api = ServeApi(self.cluster.dashboard_url)
        try:
            return api.applications()
        finally:
            api.close()

    def replica_nodes(self) -> dict[str, set[str]]:
        """Application -> the node ids its running replicas are on."""
        found: dict[str, set[str]] = {}
        for app in self.applications():
            for deployment in app.deployments:
                for replica in deployment.replicas:
                    if replica.state == "RUNNING" and replica.node_id:
                        found.setdefault(app.name, set()).add(replica.node_id)
        return found


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    nats = platform_nats(port=free_port(), workdir=tmp_path_factory.mktemp("nats")).start()
    try:
        yield nats.url
    finally:
        nats.stop()


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalIndex]:
    work = tmp_path_factory.mktemp("index")
    with package_index(work) as running:
        publish_everything(running)
        yield running


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    return bare_ray_environment(tmp_path_factory.mktemp("bare-env"), ROOT / "requirements.lock.txt")


def cli_deploy(
    dashboard_url: str, index_url: str, nats_url: str, serve_port: int, *extra: str
) -> Result:
    """``aictl deploy`` of the cpu profile to the cluster at ``dashboard_url``."""
    return CliRunner().invoke(
        cli,
        [
            "deploy",
            "--address",
            dashboard_url,
            "--profile",
            "cpu",
            "--index-url",
            index_url,
            "--version",
            VERSION,
            "--nats-url",
            nats_url,
            "--milvus-host",
            "lite",
            "--otlp-endpoint",
            "off",
            "--serve-host",
            LOOPBACK,
            "--serve-port",
            str(serve_port),
            "--timeout",
            str(DEPLOY_TIMEOUT_S),
            *extra,
        ],
    )


@pytest.fixture
def head_only(tmp_path: Path, bare_python: str) -> Iterator[LocalCluster]:
    """A cluster of one bare node that offers no custom resource."""
    with LocalCluster(tmp_path / "ray", env=NODE_ENV) as cluster:
        cluster.start_head(bare_python, num_cpus=2, env={"DATA_DIR": str(tmp_path / "data")})
        yield cluster


def test_a_cluster_without_the_head_resource_is_refused_before_deploying(
    head_only: LocalCluster, index: LocalIndex, nats_url: str
) -> None:
    result = cli_deploy(
        head_only.dashboard_url, index.simple_url, nats_url, free_port(), "--layout", "cluster"
    )
    assert result.exit_code != 0
    assert "no node offers the resource 'head'" in result.output
    assert """--resources '{"head": 1}'""" in result.output
    # Nothing was applied.
    api = ServeApi(head_only.dashboard_url)
    try:
        assert api.applications() == []
    finally:
        api.close()


def test_an_index_missing_a_dependency_fails_the_deploy_with_pips_error(
    head_only: LocalCluster, index: LocalIndex, nats_url: str, tmp_path: Path
) -> None:
    lacking = tmp_path / "lacking"
    with package_index(lacking) as partial:
        for wheel in index.directory.iterdir():
            if not wheel.name.startswith("pymilvus-"):
                shutil.copy(wheel, partial.directory)
        result = cli_deploy(
            head_only.dashboard_url,
            partial.simple_url,
            nats_url,
            free_port(),
            "--layout",
            "one-node",
            "--app",
            "chat",
        )
    assert result.exit_code != 0
    output = " ".join(result.output.split())
    assert "chat failed to deploy" in output
    assert "pymilvus" in output, output


def test_a_bridge_that_cannot_reach_nats_fails_the_deploy_naming_nats_url(
    head_only: LocalCluster, index: LocalIndex
) -> None:
    nowhere = f"nats://{LOOPBACK}:{free_port()}"
    result = cli_deploy(
        head_only.dashboard_url,
        index.simple_url,
        nowhere,
        free_port(),
        "--layout",
        "one-node",
        "--app",
        "bridge",
    )
    assert result.exit_code != 0
    output = " ".join(result.output.split())
    assert "bridge failed to deploy" in output
    assert "cannot reach NATS" in output, output
    assert "NATS_URL" in output


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, nats_url: str, index: LocalIndex, bare_python: str
) -> Iterator[ClusterStack]:
    work = tmp_path_factory.mktemp("cluster")
    with LocalCluster(work / "ray", env=NODE_ENV) as cluster:
        head = cluster.start_head(
            bare_python, resources={"head": 1}, num_cpus=2, env={"DATA_DIR": str(work / "head")}
        )
        workers = [
            cluster.add_worker(
                sys.executable,
                name,
                resources={"worker": 1},
                num_cpus=2,
                env={"DATA_DIR": str(work / name)},
            )
            for name in ("worker-1", "worker-2")
        ]
        port = free_port()
        running = ClusterStack(
            cluster=cluster,
            head=head,
            workers=workers,
            index=index,
            nats_url=nats_url,
            serve_url=f"http://{LOOPBACK}:{port}",
        )
        result = cli_deploy(
            cluster.dashboard_url, index.simple_url, nats_url, port, "--layout", "cluster"
        )
        assert result.exit_code == 0, result.output
        assert "every application runs" in result.output
        with httpx.Client(base_url=f"{running.serve_url}/chat", timeout=300) as http:
            response = http.post(
                "/knowledge/documents", json={"collection": COLLECTION, "documents": DOCUMENTS}
            )
            assert response.status_code == 200, response.text
        yield running


def test_handlers_run_on_the_head_and_models_on_the_workers(stack: ClusterStack) -> None:
    nodes = stack.replica_nodes()
    for name in HANDLERS:
        assert nodes[name] == {stack.head.node_id}, (name, nodes)
    worker_ids = {worker.node_id for worker in stack.workers}
    for name in MODEL_APPS:
        assert nodes[name] <= worker_ids, (name, nodes)
        assert stack.head.node_id not in nodes[name]


def test_the_head_installed_the_handlers_from_the_index_into_a_bare_environment(
    stack: ClusterStack,
) -> None:
    # The head's own environment has Ray and nothing of ours.
    head_python = str(stack.head.process.args[0])  # type: ignore[index]
    check = subprocess.run(
        [head_python, "-c", "import chat_handler"], capture_output=True, text=True, check=False
    )
    assert check.returncode != 0
    assert "No module named 'chat_handler'" in check.stderr
    # Yet the chat app runs, at the published version, with its dependencies from the index.
    health = httpx.get(f"{stack.serve_url}/chat/-/healthz", timeout=60).json()
    assert health == {"status": "ok", "app": "chat-handler", "version": VERSION}
    served = httpx.get(f"{stack.index.simple_url}pymilvus/", timeout=30)
    assert served.status_code == 200


def test_chat_and_voice_are_answered_over_http(stack: ClusterStack) -> None:
    with httpx.Client(base_url=stack.serve_url, timeout=600) as http:
        chat = http.post("/chat", json={"query": QUESTION, "collection": COLLECTION, "top_n": 2})
        assert chat.status_code == 200, chat.text
        assert "350" in chat.json()["response"]
        assert chat.json()["sources"][0]["metadata"]["doc_id"] == "kt9"
        voice = http.post(
            "/voice",
            params={"collection": COLLECTION, "top_n": 2},
            content=speak(QUESTION),
            headers={"content-type": "audio/wav"},
        )
        assert voice.status_code == 200, voice.text
        answer = voice.json()
        assert "kite" in answer["transcript"].lower()
        assert "350" in answer["response"]
        assert base64.b64decode(answer["audio"])[:4] == b"RIFF"


async def ask_over_nats(stack: ClusterStack) -> tuple[ChatResponse, VoiceResponse]:
    nc = await connect(Settings(nats_url=stack.nats_url))
    try:
        chat = await request(
            nc,
            "ai.chat.request",
            ChatRequest(query=QUESTION, collection=COLLECTION, top_n=2),
            ChatResponse,
            timeout=600,
        )
        wav = await asyncio.to_thread(speak, QUESTION)
        voice = await request(
            nc,
            "voice.request",
            VoiceRequest(audio=base64.b64encode(wav).decode(), collection=COLLECTION, top_n=2),
            VoiceResponse,
            timeout=600,
        )
        return chat, voice
    finally:
        await nc.drain()


async def test_chat_voice_and_pipelines_are_served_over_nats(stack: ClusterStack) -> None:
    chat, voice = await ask_over_nats(stack)
    assert "350" in chat.response
    assert "350" in voice.response
    assert voice.audio
    # The pipeline service answers triggers (an unknown pipeline: not_found, at once).
    nc = await connect(Settings(nats_url=stack.nats_url))
    try:
        reply = await nc.request(
            "ai.pipeline.trigger",
            PipelineTrigger(pipeline="no-such-pipeline", params={}).model_dump_json().encode(),
            timeout=60,
        )
    finally:
        await nc.drain()
    assert reply.headers is not None
    assert reply.headers.get("Nats-Service-Error-Code") == "404"
    assert b"not_found" in reply.data


def wait_until_moved(
    stack: ClusterStack, gone: RayNode, timeout_s: float = DEPLOY_TIMEOUT_S
) -> None:
    """Until every app runs again with every replica off the node that is ``gone``."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = stack.applications()
        nodes = stack.replica_nodes()
        moved = all(
            name in nodes and gone.node_id not in nodes[name] for name in (*MODEL_APPS, *HANDLERS)
        )
        if moved and states and all(s.is_running for s in states):
            return
        assert time.monotonic() < deadline, [(s.name, s.status, s.message) for s in states]
        time.sleep(2)


async def test_a_killed_worker_s_replicas_move_and_requests_are_answered(
    stack: ClusterStack,
) -> None:
    llm_node = next(iter(stack.replica_nodes()["llm"]))
    (victim,) = [w for w in stack.workers if w.node_id == llm_node]
    (survivor,) = [w for w in stack.workers if w is not victim]
    victim.kill()
    await asyncio.to_thread(wait_until_moved, stack, victim)
    nodes = stack.replica_nodes()
    for name in MODEL_APPS:
        assert nodes[name] == {survivor.node_id}, (name, nodes)
    chat, voice = await ask_over_nats(stack)
    assert "350" in chat.response
    assert "350" in voice.response
    async with httpx.AsyncClient(timeout=600) as http:
        response = await http.post(
            f"{stack.serve_url}/chat",
            json={"query": QUESTION, "collection": COLLECTION, "top_n": 2},
        )
    assert response.status_code == 200, response.text
    assert "350" in response.json()["response"]
