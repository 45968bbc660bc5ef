"""The whole platform on one machine: what ``aictl up`` starts, and stops again.

In order: NATS (the one at ``NATS_URL`` when it answers, else the bundled ``nats-server``
with JetStream under the data folder), a local Ray cluster on 127.0.0.1 with its
dashboard, every application of the cpu profile applied as one Serve config through
Serve's REST API (the document ``aictl render`` prints: the NATS bridge and the
pipeline service are its ``bridge`` application), and on
the first run the bundled sample knowledge base. A state file in the data folder tells
``aictl down`` and ``aictl status`` in other shells what runs.

Secrets stay in the process environment, which Ray's workers inherit from the
``ray.init`` here: ``API_KEYS`` (the keys the HTTP apps accept), ``SERVICE_API_KEY``,
the NATS credentials. None of them is written into the Serve config, the state file or
anything printed; NATS URLs are recorded and shown without their user part.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel

from aictl.apps import StackOptions
from aictl.render import ServeOptions, serve_config
from aictl.serve_api import ApplicationState, ServeApi, deploy_and_wait
from handler_base.errors import PlatformError
from handler_base.local_ray import init_local_ray
from handler_base.messaging.connection import redact_url
from handler_base.messaging.server import NatsServer, platform_nats
from handler_base.settings import Settings
from ray_inference.llm_models import DEFAULT_LLM_MODEL

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
SAMPLE_COLLECTION = "default"
RAY_NAMESPACE = "ray-ai-platform"
SERVICE_URL_VARIABLES = {
    "EMBEDDINGS_URL": "embeddings",
    "RERANKER_URL": "reranker",
    "LLM_URL": "llm",
    "STT_URL": "whisper",
    "TTS_URL": "tts",
    "CHAT_URL": "chat",
    "VOICE_URL": "voice",
}
"""The settings' HTTP fallback variables and the Serve app each names."""


class StackState(BaseModel):
    """What a running ``aictl up`` wrote down for the other commands (nothing secret)."""

    pid: int
    serve_url: str
    dashboard_url: str
    nats_url: str
    """Without user, password or token: credentials come from each command's settings."""
    nats_pid: int | None = None
    started_at: float


def state_path(settings: Settings) -> Path:
    """The state file of the stack that uses ``settings.data_dir``."""
    return settings.data_dir / "aictl" / "stack.json"


def read_state(settings: Settings) -> StackState | None:
    """The running stack's state, or None when no stack runs (a stale file is removed)."""
    path = state_path(settings)
    try:
        state = StackState.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None
    if not pid_alive(state.pid):
        path.unlink(missing_ok=True)
        return None
    return state


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def redact_urls(urls: str) -> str:
    """A comma-separated list of NATS URLs without their user parts."""
    return ",".join(redact_url(url.strip()) for url in urls.split(",") if url.strip())


def stack_nats_settings(settings: Settings, state: StackState | None) -> Settings:
    """``settings`` pointed at the running stack's NATS (its credentials stay the settings')."""
    if state is None or state.nats_url == redact_urls(settings.nats_url):
        return settings
    return settings.model_copy(update={"nats_url": state.nats_url})


def nats_credentials_named(settings: Settings) -> str | None:
    """The variables that hold the NATS credentials in use, e.g. ``NATS_USER/NATS_PASSWORD``."""
    named = [
        name
        for name, value in (
            ("NATS_USER/NATS_PASSWORD", settings.nats_user or settings.nats_password),
            ("NATS_TOKEN", settings.nats_token),
            ("NATS_CREDS_FILE", settings.nats_creds_file),
            ("NATS_URL's user part", any("@" in url for url in settings.nats_servers)),
        )
        if value
    ]
    return ", ".join(named) or None


def describe_nats_failure(settings: Settings, exc: BaseException) -> str:
    """One line on why NATS could not be reached, naming what to check; never a secret.

    The message of :func:`handler_base.messaging.connect`'s error already names the server
    without its user part; a refused login is said in words.
    """
    text = str(exc)
    if "authorization violation" in text.lower() or "authentication" in text.lower():
        where = redact_urls(settings.nats_url)
        used = nats_credentials_named(settings)
        if used is None:
            return (
                f"the NATS server at {where} needs credentials: set NATS_USER and "
                "NATS_PASSWORD, NATS_TOKEN or NATS_CREDS_FILE"
            )
        return f"the NATS server at {where} refused the credentials: check {used}"
    return text


def nats_problem(settings: Settings, wait_s: float = 5.0) -> str | None:
    """Connect to NATS as ``settings`` say (credentials, TLS) and close again.

    Returns:
        None when it worked, else one line on why not (see :func:`describe_nats_failure`).
    """
    import asyncio

    from handler_base.messaging import connect

    async def probe() -> None:
        nc = await connect(settings, connect_wait_s=wait_s)
        await nc.close()

    # Each failed attempt would log a warning of its own: the one line returned says it.
    connection_log = logging.getLogger("handler_base.messaging.connection")
    level = connection_log.level
    connection_log.setLevel(logging.ERROR)
    try:
        asyncio.run(probe())
    except (PlatformError, OSError, ImportError, ValueError) as exc:
        return describe_nats_failure(settings, exc)
    finally:
        connection_log.setLevel(level)
    return None


def port_answers(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True when something accepts TCP connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def sample_documents() -> list[dict[str, Any]]:
    """The bundled sample knowledge base, as knowledge-API documents."""
    from handler_base.rag.documents import parse_document

    documents = []
    folder = resources.files("aictl") / "sample"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".md"):
            continue
        text, title = parse_document(entry.read_bytes(), entry.name)
        metadata = {"path": f"sample/{entry.name}", **({"title": title} if title else {})}
        documents.append({"id": f"sample/{entry.name}", "text": text, "metadata": metadata})
    return documents


Progress = Callable[[str], None]
"""Receives one line of what is happening, in words a user knows."""

AppsProgress = Callable[[list[ApplicationState]], None]
"""Receives the applications' states while they deploy."""


@dataclass
class LocalStack:
    """The processes ``aictl up`` starts, and how to stop them.

    Attributes:
        settings: Where the data lives and where NATS is.
        serve_port: The Serve proxy's port on 127.0.0.1.
        dashboard_port: The Ray dashboard's port on 127.0.0.1.
        num_cpus: CPUs Ray may use (None: all of the machine's).
        bridge: Deploy the NATS bridge and pipeline service application (``/bridge``).
        llm: The LLM, by its name in ``ray_inference.llm_models``.
        say: Where progress lines go.
    """

    settings: Settings
    serve_port: int = 8000
    dashboard_port: int = 8265
    num_cpus: int | None = None
    bridge: bool = True
    llm: str = DEFAULT_LLM_MODEL
    say: Progress = logger.info
    _nats: NatsServer | None = None
    _ray_started: bool = False

    @property
    def serve_url(self) -> str:
        """The Serve proxy's base URL."""
        return f"http://{LOOPBACK}:{self.serve_port}"

    @property
    def dashboard_url(self) -> str:
        """The Ray dashboard's base URL."""
        return f"http://{LOOPBACK}:{self.dashboard_port}"

    @property
    def nats_url(self) -> str:
        """The NATS the stack uses (as configured: it may carry a user part)."""
        return self._nats.url if self._nats is not None else self.settings.nats_url

    @property
    def nats_url_shown(self) -> str:
        """:attr:`nats_url` without user parts: what is printed and written down."""
        return redact_urls(self.nats_url)

    @property
    def access_control(self) -> bool:
        """True when ``API_KEYS`` is set: every HTTP route but health and the page needs a key."""
        return bool(self.settings.accepted_api_keys())

    def own_api_key(self) -> str | None:
        """The key the stack's own HTTP callers send (the sample ingest, pipeline steps).

        ``SERVICE_API_KEY`` when the apps accept it, else the first of ``API_KEYS``;
        None when access is open.
        """
        keys = self.settings.accepted_api_keys()
        if not keys:
            return None
        own = self.settings.service_api_key
        if own is not None and own.get_secret_value() in keys:
            return own.get_secret_value()
        return keys[0]

    def service_api_key_accepted(self) -> bool:
        """True when this shell's ``SERVICE_API_KEY`` is one of ``API_KEYS``."""
        own = self.settings.service_api_key
        return own is not None and own.get_secret_value() in self.settings.accepted_api_keys()

    def service_env(self) -> dict[str, str]:
        """Where every part finds the others: NATS, the data folder, each app's URL.

        With access control on, also the ``SERVICE_API_KEY`` the stack's own HTTP callers
        send (it goes into the environment only, like ``API_KEYS`` itself).
        """
        env = {"NATS_URL": self.nats_url, "DATA_DIR": str(self.settings.data_dir)}
        for name, app in SERVICE_URL_VARIABLES.items():
            env[name] = f"{self.serve_url}/{app}"
        if (key := self.own_api_key()) is not None:
            env["SERVICE_API_KEY"] = key
        return env

    # --- start ------------------------------------------------------------------------

    def check_free(self) -> None:
        """Fail early, with what to do, when another stack or program holds the ports.

        Raises:
            RuntimeError: A stack already runs, or a port is taken.
        """
        running = read_state(self.settings)
        if running is not None:
            raise RuntimeError(
                f"the stack is already running (aictl up, pid {running.pid}); "
                "stop it with `aictl down` first"
            )
        for name, port in (("Serve", self.serve_port), ("Ray dashboard", self.dashboard_port)):
            if port_answers(LOOPBACK, port):
                raise RuntimeError(
                    f"port {port} on {LOOPBACK} (for the {name}) is taken by another program; "
                    "stop it or choose another port"
                )

    def start_nats(self) -> None:
        """Use the NATS at ``NATS_URL`` when it answers; else start the bundled server.

        A server that answers is logged into as the settings say (user and password,
        token, credentials file, TLS), so a refused login stops ``up`` here, in one line.

        Raises:
            RuntimeError: NATS_URL names a server elsewhere that does not answer, or the
                one that answers refuses us.
        """
        url = urlsplit(self.settings.nats_servers[0])
        host, port = url.hostname or LOOPBACK, url.port or 4222
        if port_answers(host, port):
            problem = nats_problem(self.settings)
            if problem is not None:
                raise RuntimeError(problem)
            self.say(f"Using the NATS server that answers at {host}:{port}")
            return
        if host not in (LOOPBACK, "localhost"):
            raise RuntimeError(
                f"NATS_URL points at {host}:{port}, which does not answer; start it, or unset "
                "NATS_URL to use the bundled server"
            )
        # The bundled server takes any credentials (it has no authorization block).
        open_note = ", no login: 127.0.0.1 only" if nats_credentials_named(self.settings) else ""
        self.say(f"Starting the bundled NATS server on {LOOPBACK}:{port} (JetStream on{open_note})")
        # Voice replies (WAV in base64) pass the default 1 MiB payload limit.
        self._nats = platform_nats(port=port, workdir=self.settings.data_dir / "nats").start()

    def start_ray(self) -> None:
        """Start a local Ray cluster on 127.0.0.1 with its dashboard (Serve starts on deploy)."""
        # The applications, the bridge and the pipeline steps read their settings from the
        # environment Ray's workers (and their subprocesses) inherit from this process.
        os.environ.update(self.service_env())
        self.settings = Settings()
        self.say("Starting Ray on 127.0.0.1 (this takes up to a minute)")
        try:
            context = init_local_ray(
                on_retry=self.say,
                namespace=RAY_NAMESPACE,
                num_cpus=self.num_cpus,
                include_dashboard=True,
                dashboard_host=LOOPBACK,
                dashboard_port=self.dashboard_port,
                _node_ip_address=LOOPBACK,
                log_to_driver=False,
                configure_logging=False,
            )
        except Exception as exc:  # Ray's own errors name no common type
            raise RuntimeError(
                f"Ray did not start: {exc}. Its logs are under /tmp/ray/session_latest/logs; "
                "on a busy machine, try again when it is quieter"
            ) from exc
        self._ray_started = True
        # Another Ray on this machine may have taken the port since check_free(): talk
        # only to the dashboard this cluster reports, never to whatever has the port.
        if not context.dashboard_url:
            raise RuntimeError(
                f"the Ray dashboard did not start (is port {self.dashboard_port} taken?); "
                "Serve's config API needs it"
            )
        self.dashboard_port = int(context.dashboard_url.rsplit(":", 1)[1])

    def deploy(self, on_progress: AppsProgress, timeout_s: float = 1800.0) -> None:
        """Apply the cpu profile's Serve config and wait until every application runs.

        Raises:
            RuntimeError: An application failed to deploy (Serve's message), or not all
                ran within ``timeout_s``.
        """
        config = serve_config(
            StackOptions(profile="cpu", with_bridge=self.bridge, llm=self.llm),
            ServeOptions(http_host=LOOPBACK, http_port=self.serve_port),
        )
        api = ServeApi(self.dashboard_url)
        try:
            self._wait_for_dashboard(api)
            self.say(f"Deploying {len(config['applications'])} applications (models load now)")
            deploy_and_wait(api, config, on_progress, timeout_s)
        finally:
            api.close()

    def _wait_for_dashboard(self, api: ServeApi, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                api.applications()
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"Ray's dashboard at {self.dashboard_url} did not answer within "
                        f"{timeout_s:.0f} s ({exc}); Serve's config API runs in it. See "
                        "/tmp/ray/session_latest/logs/dashboard.log"
                    ) from exc
                time.sleep(1.0)

    def ingest_sample(self, force: bool = False) -> int | None:
        """Ingest the bundled sample knowledge base on the first run.

        Returns:
            The chunks written, or None when it was ingested before.
        """
        marker = self.settings.data_dir / "aictl" / "sample-ingested"
        if marker.exists() and not force:
            return None
        import asyncio

        from handler_base.clients import KnowledgeClient

        documents = sample_documents()
        self.say(f"Ingesting the sample knowledge base ({len(documents)} documents)")

        async def ingest() -> int:
            async with KnowledgeClient(
                self.settings, mode="http", base_url=f"{self.serve_url}/chat"
            ) as client:
                answer = await client.ingest(
                    {"collection": SAMPLE_COLLECTION, "documents": documents}
                )
                return answer.chunks

        chunks = asyncio.run(ingest())
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"documents": len(documents), "chunks": chunks}))
        return chunks

    def write_state(self) -> None:
        """Record this stack for ``aictl down`` and ``aictl status``."""
        state = StackState(
            pid=os.getpid(),
            serve_url=self.serve_url,
            dashboard_url=self.dashboard_url,
            nats_url=self.nats_url_shown,
            nats_pid=self._nats.pid if self._nats is not None else None,
            started_at=time.time(),
        )
        path = state_path(self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(state.model_dump_json(indent=2))

    # --- stop -------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything this stack started, in reverse order; safe to call twice."""
        if self._ray_started:
            import ray
            from ray import serve

            self.say("Stopping the applications and Ray")
            try:
                serve.shutdown()  # type: ignore[no-untyped-call]
            except Exception as exc:  # ray.shutdown() ends them anyway
                logger.warning("stopping Serve: %s", exc)
            ray.shutdown()
            self._ray_started = False
        if self._nats is not None:
            self.say("Stopping the bundled NATS server")
            self._nats.stop()
            self._nats = None
        if _state_is_ours(state_path(self.settings)):
            state_path(self.settings).unlink(missing_ok=True)


def _state_is_ours(path: Path) -> bool:
    try:
        return StackState.model_validate_json(path.read_text()).pid == os.getpid()
    except (OSError, ValueError):
        return False


def stop_running_stack(settings: Settings, timeout_s: float = 90.0, say: Progress = print) -> bool:
    """Stop the stack another ``aictl up`` runs (what ``aictl down`` does).

    Sends it SIGTERM (it then stops all it started, as on Ctrl-C) and waits; kills it and
    its NATS server when it does not end within ``timeout_s``.

    Returns:
        False when no stack was running.
    """
    state = read_state(settings)
    if state is None:
        return False
    say(f"Stopping the stack (aictl up, pid {state.pid})")
    os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while pid_alive(state.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    if pid_alive(state.pid):
        say(f"It did not stop within {timeout_s:.0f} s; killing it")
        # Ray's processes share its process group when it leads one (started from a shell).
        if os.getpgid(state.pid) == state.pid:
            os.killpg(state.pid, signal.SIGKILL)
        else:
            os.kill(state.pid, signal.SIGKILL)
        if state.nats_pid is not None and pid_alive(state.nats_pid):
            os.kill(state.nats_pid, signal.SIGKILL)
    state_path(settings).unlink(missing_ok=True)
    return True
