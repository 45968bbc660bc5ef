"""The platform's NATS actors on a nats-server that requires authentication or TLS.

The NATS bridge actors and the pipeline service actor get their Settings (pickled, with
the secrets as ``SecretStr``) from the driver and connect in their own worker processes,
reading the creds file and the TLS files there. Each method is checked end to end: a
chat request over NATS is answered by the real chat app on Serve, a pipeline trigger by
the pipeline service, again after the NATS server restarts; with a wrong password the
bridge does not start; and no secret is in any log of the Ray session.

Chat questions go to a collection that does not exist, which the chat handler answers
after one embedding and no LLM: the chat app runs beside the session's model apps.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from chat_handler.rag import NO_SOURCES_ANSWER
from handler_base.errors import NotFoundError, RequestTimeoutError, UnavailableError
from handler_base.messages import ChatRequest, ChatResponse, PipelineRunAccepted, PipelineTrigger
from handler_base.messaging import connect, request
from handler_base.settings import Settings
from handler_base.testing.nats import NatsServer
from handler_base.testing.nats_auth import (
    make_operator_auth,
    make_tls_files,
    tls_config,
    user_password_config,
)
from handler_base.testing.nats_fixtures import NatsServerFactory, nats_test_settings
from handler_base.testing.platform import SharedApps
from handler_base.testing.ray_fixtures import LocalServe
from pipeline_bridge import BridgeConfig, start_bridges, stop_bridges
from pipeline_bridge.pipelines import PipelineServiceConfig
from pipeline_bridge.pipelines.actor import start_pipeline_service, stop_pipeline_service

pytestmark = pytest.mark.integration

CHAT = "ai.chat.request"
TRIGGER = "ai.pipeline.trigger"
USER = "bridge"
PASSWORD = "br1dge-pa55-do-not-log"
WRONG_PASSWORD = "wr0ng-br1dge-pa55-do-not-log"
REQUEST_TIMEOUT_S = 120.0
"""An embedding on a busy two-core machine; far more than it needs when idle."""

SECRETS: list[str] = [PASSWORD, WRONG_PASSWORD]
"""Every secret this module hands to an actor; none may be in the Ray session's logs."""


@pytest.fixture(scope="module")
def stack(
    serve_instance: LocalServe, model_apps: SharedApps, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The chat app on the session's Serve (an empty knowledge base), beside the models."""
    from ray import serve

    from chat_handler import build_app

    data_dir = tmp_path_factory.mktemp("bridge-auth-data")
    apps: dict[str, Any] = {
        "chat": build_app({"num_cpus": 0.1, "milvus_uri": str(data_dir / "milvus.db")}),
    }
    for name, app in apps.items():
        serve.run(app, name=name, route_prefix=f"/{name}")
    try:
        yield serve_instance.http_url
    finally:
        for name in reversed(apps):
            serve.delete(name)


def ray_log_text() -> str:
    """Everything in the log files of this Ray session: drivers, raylet, every worker."""
    import ray

    node = ray._private.worker.global_worker.node
    assert node is not None, "Ray is not initialized in this process"
    logs_dir = Path(node.get_logs_dir_path())
    return "\n".join(p.read_text(errors="replace") for p in logs_dir.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def ray_logs(serve_instance: LocalServe) -> Iterator[None]:
    """After the module: no secret in any log file of the Ray session (actors included)."""
    yield
    text = ray_log_text()
    assert not [f"{secret[:6]}..." for secret in SECRETS if secret in text]


@dataclass
class Secured:
    server: NatsServer
    auth: dict[str, Any]
    """Settings fields that get in."""

    def settings(self, **auth: Any) -> Settings:
        return nats_test_settings(
            self.server.url,
            nats_name="nats-bridge",
            http_timeout_s=REQUEST_TIMEOUT_S,
            **(auth or self.auth),
        )


def user_password(folder: Path) -> tuple[str, str, dict[str, Any]]:
    auth = {"nats_user": USER, "nats_password": SecretStr(PASSWORD)}
    return user_password_config(USER, PASSWORD), "nats", auth


def creds_file(folder: Path) -> tuple[str, str, dict[str, Any]]:
    operator = make_operator_auth(folder)
    SECRETS.append(operator.user_seed)
    return operator.server_config, "nats", {"nats_creds_file": operator.creds_file}


def mutual_tls(folder: Path) -> tuple[str, str, dict[str, Any]]:
    files = make_tls_files(folder)
    SECRETS.append(max(files.client_key.read_text().splitlines(), key=len))
    auth = {
        "nats_tls_ca_file": files.ca,
        "nats_tls_cert_file": files.client_cert,
        "nats_tls_key_file": files.client_key,
    }
    return tls_config(files, verify_clients=True), "tls", auth


METHODS: dict[str, Callable[[Path], tuple[str, str, dict[str, Any]]]] = {
    "user_password": user_password,
    "creds_file": creds_file,
    "mutual_tls": mutual_tls,
}


@pytest.fixture(params=list(METHODS))
def secured(
    request: pytest.FixtureRequest, nats_server_factory: NatsServerFactory, tmp_path: Path
) -> Secured:
    config, scheme, auth = METHODS[request.param](tmp_path / "auth")
    return Secured(nats_server_factory(config=config, scheme=scheme), auth)


async def in_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(functools.partial(function, *args, **kwargs))


async def until_answered(call: Callable[[], Any], what: str) -> Any:
    """``await call()`` until it does not fail as unavailable (after a NATS restart)."""
    for _ in range(240):
        try:
            return await call()
        except (UnavailableError, RequestTimeoutError):
            await asyncio.sleep(0.5)
    pytest.fail(f"{what} did not answer again after the NATS server restarted")


async def test_the_actors_serve_on_a_secured_nats_server(
    stack: str, ray_logs: None, secured: Secured, tmp_path: Path
) -> None:
    settings = secured.settings()
    config = BridgeConfig(namespace=f"bridge-auth-{uuid.uuid4().hex[:8]}")
    bridges = await in_thread(start_bridges, 1, config, settings)
    service = await in_thread(
        start_pipeline_service,
        settings.model_copy(update={"data_dir": tmp_path}),
        PipelineServiceConfig(local_root=tmp_path / "runs"),
    )
    nc = await connect(settings, connect_wait_s=10.0)
    try:

        async def chat() -> ChatResponse:
            question = ChatRequest(query="Is anyone there?", collection="nothing_here")
            return await request(nc, CHAT, question, ChatResponse, timeout=REQUEST_TIMEOUT_S)

        async def trigger() -> None:
            with pytest.raises(NotFoundError, match="no-such-pipeline"):
                await request(
                    nc, TRIGGER, PipelineTrigger(pipeline="no-such-pipeline"), PipelineRunAccepted
                )

        assert (await chat()).response == NO_SOURCES_ANSWER
        await trigger()

        await in_thread(secured.server.restart)  # every side reconnects with its secret
        assert (await until_answered(chat, "the bridge")).response == NO_SOURCES_ANSWER
        await until_answered(trigger, "the pipeline service")
        info = await bridges[0].info.remote()
        assert info["answered"] >= 2
    finally:
        await nc.close()
        await in_thread(stop_bridges, config, count=1, timeout_s=30)
        await in_thread(stop_pipeline_service, timeout_s=30)
        del service


async def test_a_bridge_with_a_wrong_password_does_not_start(
    ray_logs: None, nats_server_factory: NatsServerFactory
) -> None:
    server = nats_server_factory(config=user_password_config(USER, PASSWORD))
    settings = nats_test_settings(
        server.url, nats_user=USER, nats_password=SecretStr(WRONG_PASSWORD)
    )
    config = BridgeConfig(namespace=f"bridge-auth-{uuid.uuid4().hex[:8]}")
    try:
        with pytest.raises(UnavailableError, match="1 of 1 NATS bridges did not start"):
            await in_thread(start_bridges, 1, config, settings, ready_timeout_s=5.0)
    finally:
        await in_thread(stop_bridges, config, count=1, timeout_s=10)
    assert "authentication error" in server.log_text()
    # The actor said why, in its worker's log (and, checked after the module, no secret).
    for _ in range(50):
        if f"{server.url}: the server refused the credentials" in ray_log_text():
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the bridge actor did not log that the server refused its credentials")
