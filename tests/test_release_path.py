"""The release path, for real: wheels -> a package index -> ``runtime_env`` -> Serve.

What a tag does in CI (``.gitea/workflows/ci.yml``) and what a RayService does with the
rendered ``serveConfigV2``, on this machine:

1. handler-base and chat-handler are built with ``uv build`` from a copy of their
   sources stamped with a test version (``<installed>.post1``). The workspace packages
   are installed (editable) in the environment Ray's workers clone, so only a version
   that exists nowhere but in the index proves that the code came from the index.
2. A real index server (pypiserver, uploads behind a password) listens on 127.0.0.1;
   the wheels go there with ``uv publish``.
3. The models are the session's (``model_apps``, deployed from this environment); the
   chat app is deployed from the Serve config entry that ``aictl.render`` writes, whose
   ``runtime_env.pip`` installs the pinned wheels from that index. The config goes
   through the controller's ``deploy_apps``, as the dashboard's ``PUT
   /api/serve/applications/`` (what ``serve deploy`` and KubeRay call) does; the test
   cluster runs no dashboard. An ingested fact is then answered.
4. ``.post2`` is published and the chat app redeployed with the new pins while a thread
   searches the knowledge base without pause: every request succeeds and the app then
   reports the new version.
"""

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import pytest

from aictl.apps import StackOptions
from aictl.render import PackageIndex, ServeOptions, serve_config
from handler_base.testing.cluster import uv
from handler_base.testing.package_index import (
    INDEX_USER,
    LocalIndex,
    build_wheel,
    package_index,
)
from handler_base.testing.platform import SharedApps
from handler_base.testing.ray_fixtures import LocalServe, pickle_by_value

pytestmark = [
    pytest.mark.integration,
    # Each release installs into a clone of the environment (Ray's pip runtime_env):
    # minutes on a busy 2-core machine.
    pytest.mark.timeout(1800),
    # passlib (the index's password file) imports the stdlib's deprecated `crypt`.
    pytest.mark.filterwarnings("ignore:'crypt' is deprecated:DeprecationWarning"),
]

ROOT = Path(__file__).resolve().parents[1]
RELEASED = ("handler-base", "chat-handler")
"""What the chat app imports from us: the wheels a release of the chat handler carries."""
BASE_VERSION = version("handler-base")
FIRST = f"{BASE_VERSION}.post1"
SECOND = f"{BASE_VERSION}.post2"
DEPLOY_TIMEOUT_S = 900.0

COLLECTION = "release"
FACT = "The VR-88 rain sensor costs 263 euros and ships in orange."
QUESTION = "How much does the VR-88 rain sensor cost?"
DOCUMENTS = [
    {"id": "vr88", "text": FACT, "metadata": {"title": "VR-88 rain sensor"}},
    {"id": "desk", "text": "The help desk answers the phone from 8 until 4 on weekdays."},
]

pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalIndex]:
    with package_index(tmp_path_factory.mktemp("index")) as running:
        yield running


def stamp_version(project: Path, new_version: str) -> None:
    """Give a copied package ``new_version`` (its pyproject and any ``__version__``)."""
    pyproject = project / "pyproject.toml"
    text, count = re.subn(
        r'^version = ".*"$',
        f'version = "{new_version}"',
        pyproject.read_text(),
        count=1,
        flags=re.M,
    )
    assert count == 1, f"no version line in {pyproject}"
    pyproject.write_text(text)
    for init in (project / "src").glob("*/__init__.py"):
        init.write_text(
            re.sub(
                r'^__version__ = ".*"$',
                f'__version__ = "{new_version}"',
                init.read_text(),
                flags=re.M,
            )
        )


def release(index: LocalIndex, new_version: str, workdir: Path) -> list[Path]:
    """Build the released packages at ``new_version`` and publish them to ``index``."""
    dist = workdir / "dist"
    for name in RELEASED:
        copy = workdir / "src" / name
        shutil.copytree(
            ROOT / "packages" / name,
            copy,
            ignore=shutil.ignore_patterns("tests", "__pycache__", "*.egg-info"),
        )
        stamp_version(copy, new_version)
        build_wheel(copy, dist)
    wheels = sorted(dist.glob(f"*-{new_version}-*.whl"))
    assert len(wheels) == len(RELEASED), wheels
    # Credentials through the environment, as CI passes its secret: not on a command line.
    credentials = {"UV_PUBLISH_USERNAME": INDEX_USER, "UV_PUBLISH_PASSWORD": index.password}
    subprocess.run(
        [uv(), "publish", "--publish-url", index.upload_url, *map(str, wheels)],
        check=True,
        timeout=300,
        env={**os.environ, **credentials},
    )
    return wheels


def chat_config(index: LocalIndex, serve: LocalServe, milvus_uri: str, pin: str) -> dict[str, Any]:
    """The rendered Serve config of the chat app, installing ``pin`` from ``index``."""
    config = serve_config(
        StackOptions(milvus_uri=milvus_uri),
        ServeOptions(
            http_port=serve.port,
            index=PackageIndex(url=index.simple_url, version=pin),
            apps=("chat",),
        ),
    )
    return config


def deploy(config: dict[str, Any]) -> None:
    """Apply a Serve config as ``serve deploy`` / KubeRay do; wait until it runs."""
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    # What the dashboard's PUT /api/serve/applications/ does with the document.
    client = _get_global_client()
    assert client is not None, "Serve is not running"
    client.deploy_apps(ServeDeploySchema.model_validate(config))
    names = [app["name"] for app in config["applications"]]
    deadline = time.monotonic() + DEPLOY_TIMEOUT_S
    while True:
        statuses = {name: serve.status().applications.get(name) for name in names}
        failed = {n: s.message for n, s in statuses.items() if s and s.status == "DEPLOY_FAILED"}
        assert not failed, f"deploying failed: {failed}"
        if all(s is not None and s.status == "RUNNING" for s in statuses.values()):
            return
        assert time.monotonic() < deadline, f"not running after {DEPLOY_TIMEOUT_S} s: {statuses}"
        time.sleep(2)


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = DEPLOY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what}: not after {timeout_s} s"
        time.sleep(1)


def installed_in_runtime_env(pip: dict[str, Any]) -> dict[str, str]:
    """Where a worker with this ``runtime_env.pip`` imports our packages from.

    Ray keys its pip environments by the ``pip`` field alone, so this task runs in the
    environment the chat replicas run in (created by then).
    """
    import ray

    @ray.remote(num_cpus=0.1, runtime_env={"pip": pip})
    def where() -> dict[str, str]:
        import sys
        from importlib.metadata import version

        import chat_handler
        import handler_base

        return {
            "prefix": sys.prefix,
            "chat_handler": str(chat_handler.__file__),
            "handler_base": str(handler_base.__file__),
            "chat-handler": version("chat-handler"),
            "handler-base": version("handler-base"),
        }

    found: dict[str, str] = ray.get(where.remote(), timeout=DEPLOY_TIMEOUT_S)
    return found


@dataclass
class ReleasedChat:
    url: str
    index: LocalIndex
    serve: LocalServe
    milvus_uri: str
    workdir: Path
    environments: list[Path] = field(default_factory=list)

    def health(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/-/healthz", timeout=60)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def release_and_deploy(self, pin: str) -> dict[str, Any]:
        release(self.index, pin, self.workdir / pin)
        config = chat_config(self.index, self.serve, self.milvus_uri, pin)
        deploy(config)
        return config


@pytest.fixture(scope="module")
def released_chat(
    serve_instance: LocalServe,
    model_apps: SharedApps,
    index: LocalIndex,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ReleasedChat]:
    from ray import serve

    workdir = tmp_path_factory.mktemp("release")
    chat = ReleasedChat(
        url=f"{serve_instance.http_url}/chat",
        index=index,
        serve=serve_instance,
        milvus_uri=str(workdir / "milvus.db"),
        workdir=workdir,
    )
    try:
        config = chat.release_and_deploy(FIRST)
        chat.environments.append(Path(installed_in_runtime_env(pip_of(config))["prefix"]))
        yield chat
    finally:
        serve.delete("chat")
        # Each environment is a full copy of ours (Ray clones the virtualenv it runs
        # in); their pins name this test's index only, so nothing will reuse them.
        for environment in chat.environments:
            if "runtime_resources" in environment.parts:
                shutil.rmtree(environment.parent, ignore_errors=True)


def pip_of(config: dict[str, Any]) -> dict[str, Any]:
    pip: dict[str, Any] = config["applications"][0]["runtime_env"]["pip"]
    return pip


def test_the_index_holds_the_release_and_refuses_uploads_without_the_password(
    released_chat: ReleasedChat,
) -> None:
    index = released_chat.index
    page = httpx.get(f"{index.simple_url}chat-handler/", timeout=30)
    assert page.status_code == 200
    assert f"chat_handler-{FIRST}-py3-none-any.whl" in page.text
    # An upload as `uv publish` sends it (the legacy upload API), without or with a wrong
    # password.
    upload = {":action": "file_upload", "name": "chat-handler", "version": "9.9.9"}
    wheel = {"content": ("chat_handler-9.9.9-py3-none-any.whl", b"not a wheel")}
    for auth in (None, (INDEX_USER, "wrong-password")):
        response = httpx.post(index.upload_url, data=upload, files=wheel, auth=auth, timeout=30)
        assert response.status_code in (401, 403), response.text
    assert "9.9.9" not in httpx.get(f"{index.simple_url}chat-handler/", timeout=30).text


def test_the_chat_app_runs_the_wheels_from_the_index(released_chat: ReleasedChat) -> None:
    assert released_chat.health() == {"status": "ok", "app": "chat-handler", "version": FIRST}
    pip = pip_of(chat_config(released_chat.index, released_chat.serve, "unused", FIRST))
    assert pip["packages"] == [f"{name}=={FIRST}" for name in RELEASED]
    assert pip["pip_install_options"][:2] == ["--index-url", released_chat.index.simple_url]
    found = installed_in_runtime_env(pip)
    assert found["chat-handler"] == found["handler-base"] == FIRST
    # The code itself, not only its metadata, is the installed wheel's, not the workspace's.
    for module in ("chat_handler", "handler_base"):
        path = Path(found[module])
        assert path.is_relative_to(found["prefix"]), path
        assert not path.is_relative_to(ROOT / "packages"), path


def test_an_ingested_fact_is_answered(released_chat: ReleasedChat) -> None:
    with httpx.Client(base_url=released_chat.url, timeout=300) as http:
        response = http.post(
            "/knowledge/documents", json={"collection": COLLECTION, "documents": DOCUMENTS}
        )
        assert response.status_code == 200, response.text
        assert response.json()["ids"] == ["vr88", "desk"]
        response = http.post("", json={"query": QUESTION, "collection": COLLECTION, "top_n": 2})
        assert response.status_code == 200, response.text
        answer = response.json()
    assert "263" in answer["response"], answer
    assert answer["sources"][0]["metadata"]["doc_id"] == "vr88"


@dataclass
class Traffic:
    """Searches, each followed by a health check, one after another until stopped.

    Every answer's status is kept, and the version each health check reported.
    """

    url: str
    statuses: list[int] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    def run(self) -> None:
        body = {"query": QUESTION, "collection": COLLECTION, "top_k": 2}
        with httpx.Client(base_url=self.url, timeout=300) as http:
            while not self.stop.is_set():
                try:
                    self.check(http.post("/knowledge/search", json=body), http.get("/-/healthz"))
                except Exception as exc:  # any failure is the test's finding, kept
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    self.stop.wait(0.5)

    def check(self, search: httpx.Response, health: httpx.Response) -> None:
        self.statuses += [search.status_code, health.status_code]
        assert search.status_code == 200, search.text
        assert health.status_code == 200, health.text
        assert search.json()["results"][0]["metadata"]["doc_id"] == "vr88", search.text
        self.versions.append(health.json()["version"])


def test_a_new_release_switches_with_every_request_answered(released_chat: ReleasedChat) -> None:
    assert released_chat.health()["version"] == FIRST
    traffic = Traffic(released_chat.url)
    sender = threading.Thread(target=traffic.run, daemon=True)
    sender.start()
    try:
        wait_for(lambda: len(traffic.statuses) >= 4 or traffic.failed, "searches before the switch")
        before_switch = len(traffic.statuses)
        config = released_chat.release_and_deploy(SECOND)
        released_chat.environments.append(Path(installed_in_runtime_env(pip_of(config))["prefix"]))
        wait_for(lambda: released_chat.health()["version"] == SECOND, "the new version answers")
        after_switch = len(traffic.statuses)
        wait_for(
            lambda: len(traffic.statuses) >= after_switch + 4 or traffic.failed,
            "searches after the switch",
        )
    finally:
        traffic.stop.set()
        sender.join(timeout=310)
    assert not traffic.failures, traffic.failures[:5]
    assert len(traffic.statuses) > after_switch > before_switch
    assert set(traffic.statuses) == {200}
    # Answered by the first release, then by the second, never back.
    switch = traffic.versions.index(SECOND)
    assert switch > 0
    assert set(traffic.versions[:switch]) == {FIRST}
    assert set(traffic.versions[switch:]) == {SECOND}
    assert released_chat.health() == {"status": "ok", "app": "chat-handler", "version": SECOND}
    response = httpx.post(
        released_chat.url, json={"query": QUESTION, "collection": COLLECTION}, timeout=300
    )
    assert response.status_code == 200, response.text
    assert "263" in response.json()["response"]
