"""The parts of `aictl` that need no running stack: state file, ports, files, sample, and
logging into a NATS server that needs credentials (a real ``nats-server``)."""

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aictl.cli import supported_files
from aictl.local import (
    LocalStack,
    StackState,
    nats_problem,
    port_answers,
    read_state,
    redact_urls,
    sample_documents,
    stack_nats_settings,
    state_path,
    stop_running_stack,
)
from aictl.serve_api import DeploymentState, ReplicaState
from handler_base.settings import Settings
from handler_base.testing.nats_auth import token_config, user_password_config
from handler_base.testing.nats_fixtures import nats_test_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


def write_state(settings: Settings, pid: int) -> None:
    path = state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = StackState(
        pid=pid,
        serve_url="http://127.0.0.1:8000",
        dashboard_url="http://127.0.0.1:8265",
        nats_url="nats://127.0.0.1:4222",
        started_at=0.0,
    )
    path.write_text(state.model_dump_json())


def test_a_stale_state_file_means_nothing_runs_and_is_removed(settings: Settings) -> None:
    dead_pid = 2**22 + 17  # above the kernel's default pid_max: no such process
    write_state(settings, dead_pid)
    assert read_state(settings) is None
    assert not state_path(settings).exists()
    assert stop_running_stack(settings, say=lambda _: None) is False


def test_a_live_state_blocks_a_second_up(settings: Settings) -> None:
    write_state(settings, os.getpid())
    assert read_state(settings) is not None
    with pytest.raises(RuntimeError, match="already running"):
        LocalStack(settings).check_free()


def test_down_stops_the_process_the_state_names(settings: Settings) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_state(settings, sleeper.pid)
        assert stop_running_stack(settings, timeout_s=10, say=lambda _: None) is True
        assert sleeper.wait(timeout=10) != 0
        assert not state_path(settings).exists()
    finally:
        if sleeper.poll() is None:
            sleeper.kill()


def test_a_taken_port_is_reported_before_anything_starts(settings: Settings) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_answers("127.0.0.1", port)
        with pytest.raises(RuntimeError, match=f"port {port} .* taken"):
            LocalStack(settings, serve_port=port).check_free()


def test_a_dashboard_that_never_answers_is_said_in_words_not_a_traceback(
    settings: Settings,
) -> None:
    from aictl.serve_api import ServeApi
    from handler_base.testing.ray_fixtures import free_port

    stack = LocalStack(settings, dashboard_port=free_port())  # nothing listens there
    api = ServeApi(stack.dashboard_url)
    try:
        with pytest.raises(RuntimeError, match=rf"dashboard at {stack.dashboard_url} did not"):
            stack._wait_for_dashboard(api, timeout_s=0.5)
    finally:
        api.close()


def test_supported_files_walks_folders_and_keeps_named_files(tmp_path: Path) -> None:
    (tmp_path / "docs" / "deep").mkdir(parents=True)
    for name in ("docs/a.md", "docs/deep/b.pdf", "docs/c.bin", "docs/deep/d.HTML", "e.txt"):
        (tmp_path / name).write_text("x")
    found = list(supported_files([tmp_path / "docs", tmp_path / "e.txt"]))
    assert found == [
        tmp_path / "docs" / "a.md",
        tmp_path / "docs" / "deep" / "b.pdf",
        tmp_path / "docs" / "deep" / "d.HTML",
        tmp_path / "e.txt",
    ]


def test_the_sample_knowledge_base_ships_with_titles() -> None:
    documents = sample_documents()
    assert len(documents) >= 3
    titles = {d["metadata"]["title"] for d in documents}
    assert "Aurora X7 drone" in titles
    assert all(d["id"].startswith("sample/") and d["text"] for d in documents)


def test_replicas_are_described_as_running_of_wanted() -> None:
    deployment = DeploymentState(
        name="ChatDeployment",
        status="UPDATING",
        target_num_replicas=2,
        replicas=[ReplicaState(state="RUNNING"), ReplicaState(state="STARTING")],
    )
    assert deployment.describe_replicas() == "1/2 running, 1 starting"


# --- secrets: NATS credentials, API keys ------------------------------------------------

NATS_PASSWORD = "nats-pw-Zq81"
NATS_TOKEN = "nats-token-Kd27"


@pytest.mark.integration
@pytest.mark.parametrize("auth", ["password", "token"])
def test_nats_is_logged_into_as_the_settings_say_and_a_refusal_hides_the_secret(
    nats_server_factory: Any, tmp_path: Path, auth: str
) -> None:
    if auth == "password":
        server = nats_server_factory(config=user_password_config("aictl", NATS_PASSWORD))
        right = {"nats_user": "aictl", "nats_password": NATS_PASSWORD}
        wrong = {"nats_user": "aictl", "nats_password": "not-the-password"}
        named = "NATS_USER/NATS_PASSWORD"
    else:
        server = nats_server_factory(config=token_config(NATS_TOKEN))
        right = {"nats_token": NATS_TOKEN}
        wrong = {"nats_token": "not-the-token"}
        named = "NATS_TOKEN"

    def settings(**credentials: str) -> Settings:
        return nats_test_settings(server.url, data_dir=tmp_path, **credentials)

    assert nats_problem(settings(**right), wait_s=2) is None
    refused = nats_problem(settings(**wrong), wait_s=2)
    assert refused == f"the NATS server at {server.url} refused the credentials: check {named}"
    missing = nats_problem(settings(), wait_s=2)
    assert missing is not None
    assert "needs credentials: set NATS_USER" in missing

    # aictl up uses the server that answers, logged in; a refusal stops it in one line.
    stack = LocalStack(settings(**right), say=lambda _: None)
    stack.start_nats()
    assert stack._nats is None  # no bundled server: the one at NATS_URL is used
    with pytest.raises(RuntimeError, match="refused the credentials") as refusal:
        LocalStack(settings(**wrong), say=lambda _: None).start_nats()
    for secret in (NATS_PASSWORD, NATS_TOKEN, "not-the-password", "not-the-token"):
        assert secret not in str(refusal.value)
        assert secret not in (refused or "")


@pytest.mark.integration
def test_a_user_part_in_nats_url_logs_in_and_is_never_written_down(
    nats_server_factory: Any, tmp_path: Path
) -> None:
    server = nats_server_factory(config=user_password_config("aictl", NATS_PASSWORD))
    url = f"nats://aictl:{NATS_PASSWORD}@127.0.0.1:{server.port}"
    settings = nats_test_settings(url, data_dir=tmp_path)
    assert nats_problem(settings, wait_s=2) is None

    stack = LocalStack(settings, say=lambda _: None)
    assert stack.nats_url_shown == server.url
    stack.write_state()
    written = state_path(settings).read_text()
    assert NATS_PASSWORD not in written
    state = read_state(settings)
    assert state is not None
    assert state.nats_url == server.url
    # Commands that follow the state file keep the credentials of their own settings.
    assert stack_nats_settings(settings, state).nats_url == url
    other = nats_test_settings(f"nats://127.0.0.1:{server.port + 1}", data_dir=tmp_path)
    assert stack_nats_settings(other, state).nats_url == server.url


def test_redacted_nats_urls_keep_every_server_without_its_user_part() -> None:
    assert redact_urls("nats://u:p@a:4222, tls://tok@b:4443") == "nats://a:4222,tls://b:4443"


def keyed_settings(tmp_path: Path, **values: Any) -> Settings:
    return Settings(data_dir=tmp_path, **values)


def test_with_api_keys_the_stack_tells_its_own_callers_a_key_the_apps_accept(
    tmp_path: Path,
) -> None:
    open_stack = LocalStack(keyed_settings(tmp_path, api_keys=None, service_api_key=None))
    assert not open_stack.access_control
    assert "SERVICE_API_KEY" not in open_stack.service_env()

    own = LocalStack(keyed_settings(tmp_path, api_keys="k-one, k-two", service_api_key="k-two"))
    assert own.access_control
    assert own.service_api_key_accepted()
    assert own.service_env()["SERVICE_API_KEY"] == "k-two"

    for service_api_key in (None, "k-wrong"):
        stack = LocalStack(
            keyed_settings(tmp_path, api_keys="k-one,k-two", service_api_key=service_api_key)
        )
        assert not stack.service_api_key_accepted()
        assert stack.service_env()["SERVICE_API_KEY"] == "k-one"


def test_aictl_local_imports_no_testing_helpers() -> None:
    # A fresh interpreter: this test process has handler_base.testing loaded already.
    probe = (
        "import sys, aictl.local; "
        "print(sorted(m for m in sys.modules if m.startswith('handler_base.testing')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"
