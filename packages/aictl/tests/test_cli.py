"""The CLI's words about access control and secrets, without a running stack.

The full path (a stack with API keys, the pasted examples, a refused request) is in
``test_up.py``; these tests check what can be checked without one, with real processes
where there are any (``aictl status`` as a subprocess, a real ``nats-server``).
"""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aictl.cli import console, explain, print_examples, say_access_control, without_userinfo
from aictl.local import LocalStack
from handler_base.errors import InvalidRequestError, UnauthorizedError, UnavailableError
from handler_base.settings import Settings
from handler_base.testing.nats_auth import user_password_config
from handler_base.testing.ray_fixtures import free_port

AICTL = str(Path(sys.executable).with_name("aictl"))
KEYS = ("cli-key-one-7f3a", "cli-key-two-9b1c")


def settings(tmp_path: Path, **values: Any) -> Settings:
    return Settings(data_dir=tmp_path, **values)


def test_a_refused_request_is_explained_by_what_to_set(tmp_path: Path) -> None:
    refused = UnauthorizedError("a valid API key is required")
    assert (
        explain(refused, settings(tmp_path, service_api_key=None))
        == "the platform needs an API key: set SERVICE_API_KEY"
    )
    wrong = explain(refused, settings(tmp_path, service_api_key="not-a-key"))
    assert wrong.startswith("the API key was refused")
    assert "not-a-key" not in wrong
    other = InvalidRequestError("query: too short")
    assert explain(other, settings(tmp_path)) == "query: too short"
    nats = UnavailableError(
        "could not connect to NATS at nats://h:4222: nats: 'Authorization Violation'"
    )
    assert "refused the credentials: check NATS_USER/NATS_PASSWORD" in explain(
        nats, settings(tmp_path, nats_user="u", nats_password="p")
    )


def test_user_parts_of_urls_are_removed_from_text() -> None:
    text = "cannot reach http://svc:pw@127.0.0.1:1/chat or nats://tok@h:4222, nor https://h/x@y"
    assert without_userinfo(text) == (
        "cannot reach http://127.0.0.1:1/chat or nats://h:4222, nor https://h/x@y"
    )


def printed(stack: LocalStack) -> str:
    with console.capture() as captured:
        say_access_control(stack)
        print_examples(stack)
    return captured.get()


def test_examples_read_the_key_from_the_environment_only_when_keys_are_set(
    tmp_path: Path,
) -> None:
    keyed = LocalStack(
        settings(tmp_path, api_keys=",".join(KEYS), service_api_key=KEYS[1]),
        say=lambda line: console.print(line),
    )
    out = printed(keyed)
    assert "Access control is on: HTTP requests need one of the 2 keys in API_KEYS" in out
    assert "SERVICE_API_KEY is not" not in out
    assert '-H "Authorization: Bearer $SERVICE_API_KEY"' in out
    assert "api_key=os.environ['SERVICE_API_KEY']" in out
    assert "with SERVICE_API_KEY exported" in out
    for key in KEYS:
        assert key not in out

    unset = LocalStack(
        settings(tmp_path, api_keys=",".join(KEYS), service_api_key=None),
        say=lambda line: console.print(line),
    )
    assert "SERVICE_API_KEY is not set" in printed(unset)

    open_stack = LocalStack(
        settings(tmp_path, api_keys=None, service_api_key=None),
        say=lambda line: console.print(line),
    )
    out = printed(open_stack)
    assert "Access control" not in out
    assert "Authorization" not in out
    assert "api_key='none'" in out


@pytest.mark.integration
def test_status_shows_no_secret(nats_server_factory: Any, tmp_path: Path) -> None:
    password = "status-nats-pw-41x"
    server = nats_server_factory(config=user_password_config("aictl", password))
    closed_port = free_port()
    secrets = {
        "API_KEYS": ",".join(KEYS),
        "SERVICE_API_KEY": KEYS[0],
        "CHAT_URL": f"http://svc:status-http-pw-3k@127.0.0.1:{closed_port}/chat",
    }
    base_env = {
        **os.environ,
        **secrets,
        "DATA_DIR": str(tmp_path),
        "HTTP_RETRIES": "0",
        "COLUMNS": "300",
    }

    def status(**env: str) -> str:
        done = subprocess.run(
            [AICTL, "status"],
            env={**base_env, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        out = done.stdout + done.stderr
        assert "Traceback" not in out
        shown = (password, "wrong-pw", "status-token-88q", *secrets.values(), *KEYS)
        for secret in (*shown, "status-http-pw-3k"):
            assert secret not in out, f"{secret!r} shown:\n{out}"
        return out

    # A user part in NATS_URL logs in, and is not shown.
    out = status(NATS_URL=f"nats://aictl:{password}@127.0.0.1:{server.port}")
    assert f"NATS at {server.url}: connected" in out
    assert "No local stack is running" in out
    assert f"http://127.0.0.1:{closed_port}/chat" in out  # the URL, without its user part

    out = status(
        NATS_URL=server.url,
        NATS_USER="aictl",
        NATS_PASSWORD="wrong-pw",
        NATS_TOKEN="status-token-88q",
    )
    assert (
        f"NATS at {server.url}: the NATS server at {server.url} refused the credentials: "
        "check NATS_USER/NATS_PASSWORD, NATS_TOKEN"
    ) in out


def test_eval_without_a_platform_says_it_does_not_answer(tmp_path: Path) -> None:
    closed_port = free_port()
    done = subprocess.run(
        [AICTL, "eval", "--limit", "1"],
        env={
            **os.environ,
            "DATA_DIR": str(tmp_path),
            "CHAT_URL": f"http://127.0.0.1:{closed_port}/chat",
            "HTTP_RETRIES": "0",
            "COLUMNS": "300",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert f"the platform at http://127.0.0.1:{closed_port} does not answer" in done.stderr
    assert "aictl up" in done.stderr
