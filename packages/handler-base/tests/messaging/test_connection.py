"""Connecting: Settings to options, auth, TLS, failures, reconnects, and no secrets in logs."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlsplit

import pytest
from nats.aio.client import Server
from pydantic import SecretStr

from handler_base.errors import UnavailableError
from handler_base.messaging.connection import (
    check_creds_file,
    connect,
    connect_options,
    reconnect_handler,
    redact_url,
    tls_context,
)
from handler_base.settings import Settings
from handler_base.testing.nats import NatsServer, free_port
from handler_base.testing.nats_auth import make_operator_auth, make_tls_files
from handler_base.testing.nats_fixtures import nats_test_settings

PASSWORD = "pa55-w0rd-do-not-log"
TOKEN = "t0ken-do-not-log"


# --- options, without a server ------------------------------------------------------


def test_options_from_settings() -> None:
    settings = Settings(
        nats_url="nats://a:4222, nats://b:4222",
        nats_user="alice",
        nats_password=SecretStr(PASSWORD),
        nats_name="chat",
        nats_connect_timeout_s=3.0,
        nats_reconnect_wait_s=0.25,
        nats_max_reconnect_attempts=7,
    )
    options = connect_options(settings)
    assert options["servers"] == ["nats://a:4222", "nats://b:4222"]
    assert options["user"] == "alice"
    assert options["password"] == PASSWORD
    assert "token" not in options
    assert "tls" not in options
    assert options["name"] == "chat"
    assert options["connect_timeout"] == 3.0
    assert options["reconnect_time_wait"] == 0.25
    assert options["max_reconnect_attempts"] == 7
    assert options["allow_reconnect"] is True
    assert callable(options["reconnect_to_server_handler"])


def test_token_option() -> None:
    options = connect_options(Settings(nats_token=SecretStr(TOKEN)))
    assert options["token"] == TOKEN
    assert "user" not in options


def test_creds_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="NATS_CREDS_FILE"):
        connect_options(Settings(nats_creds_file=tmp_path / "missing.creds"))


def test_creds_file(tmp_path: Path) -> None:
    auth = make_operator_auth(tmp_path)
    options = connect_options(Settings(nats_creds_file=auth.creds_file))
    assert options["user_credentials"] == str(auth.creds_file)


@pytest.mark.parametrize(
    "content",
    [
        "",
        "not a creds file at all\n",
        "-----BEGIN NATS USER JWT-----\n",  # nats-py would loop for ever on these
        "-----BEGIN NATS USER JWT-----\nnot.a.jwt\n------END NATS USER JWT------\n",
        "-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n",
        "{creds_without_seed}",
        "{creds_with_account_seed}",
    ],
)
def test_a_bad_creds_file_is_refused_without_its_content(tmp_path: Path, content: str) -> None:
    auth = make_operator_auth(tmp_path)
    good = auth.creds_file.read_text()
    seed_at = good.index("-----BEGIN USER NKEY SEED-----")
    content = content.format(
        seed=auth.user_seed,
        creds_without_seed=good[:seed_at],
        creds_with_account_seed=good.replace(auth.user_seed, "SA" + auth.user_seed[2:]),
    )
    path = tmp_path / "bad.creds"
    path.write_text(content)
    with pytest.raises(ValueError, match="NATS_CREDS_FILE") as info:
        check_creds_file(path)
    assert str(path) in str(info.value)
    assert auth.user_seed[2:] not in str(info.value)
    assert auth.user_jwt not in str(info.value)


async def test_connect_refuses_a_bad_creds_file_before_connecting(tmp_path: Path) -> None:
    path = tmp_path / "bad.creds"
    path.write_text("-----BEGIN NATS USER JWT-----\n")
    settings = nats_test_settings(f"nats://127.0.0.1:{free_port()}", nats_creds_file=path)
    with pytest.raises(ValueError, match=r"not a NATS \.creds file"):
        await connect(settings, connect_wait_s=1.0)


def test_no_tls_settings_no_context() -> None:
    assert tls_context(Settings()) is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nats://alice:secret@127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("tls://token@nats.example:4443", "tls://nats.example:4443"),
        ("nats://[::1]:4222", "nats://[::1]:4222"),
        (urlsplit("nats://u:p@h:1"), "nats://h:1"),
        (None, "(none)"),
    ],
)
def test_redact_url(url: Any, expected: str) -> None:
    assert redact_url(url) == expected


def _servers(*reconnects: int) -> list[Server]:
    return [
        Server(uri=urlparse(f"nats://s{i}:4222"), reconnects=n) for i, n in enumerate(reconnects)
    ]


def test_reconnect_first_attempt_is_immediate_then_backs_off() -> None:
    choose = reconnect_handler(0.5, 4.0, jitter=0.0)
    delays = [choose(_servers(n), {})[1] for n in range(6)]
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0]


def test_reconnect_prefers_the_least_failed_server() -> None:
    choose = reconnect_handler(0.5, 4.0, jitter=0.0)
    server, delay = choose(_servers(3, 1, 2), {})
    assert server is not None
    assert server.uri.hostname == "s1"
    assert delay == 0.5


# --- against a real server ----------------------------------------------------------


async def test_nothing_listening_is_unavailable() -> None:
    settings = nats_test_settings(f"nats://127.0.0.1:{free_port()}")
    with pytest.raises(UnavailableError, match=r"could not connect to NATS at nats://127\.0\.0\.1"):
        await connect(settings, connect_wait_s=0.5)


async def test_reconnects_and_logs_it_in_plain_words(
    nats_server: NatsServer, nats_client: Any, caplog: pytest.LogCaptureFixture, eventually: Any
) -> None:
    caplog.set_level(logging.INFO, logger="handler_base.messaging.connection")
    nats_server.stop()
    await eventually(lambda: not nats_client.is_connected, what="the client to notice")
    nats_server.start()
    await eventually(
        lambda: f"reconnected to the NATS server at {nats_server.url}" in caplog.text,
        what="the client to reconnect",
    )
    assert nats_client.stats["reconnects"] == 1
    assert f"lost the connection to the NATS server at {nats_server.url}; reconnecting" in (
        caplog.text
    )


# --- TLS (the servers are in test_auth.py) -----------------------------------------


def test_tls_context_verifies_the_server_and_carries_our_certificate(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    context = tls_context(
        Settings(
            nats_tls_ca_file=files.ca,
            nats_tls_cert_file=files.client_cert,
            nats_tls_key_file=files.client_key,
        )
    )
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert len(context.get_ca_certs()) == 1
    assert "tls" in connect_options(Settings(nats_tls_ca_file=files.ca))


def test_tls_cert_and_key_go_together(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    with pytest.raises(ValueError, match="go together"):
        Settings(nats_tls_cert_file=files.client_cert)


def test_settings_never_show_nats_secrets() -> None:
    settings = Settings(
        nats_url=f"nats://alice:{PASSWORD}@127.0.0.1:4222, nats://{TOKEN}@127.0.0.1:4223",
        nats_password=SecretStr(PASSWORD),
        nats_token=SecretStr(TOKEN),
    )
    for text in (repr(settings), str(settings)):
        assert PASSWORD not in text
        assert TOKEN not in text
    with pytest.raises(ValueError, match="not a NATS server URL") as info:
        Settings(nats_url=f"http://alice:{PASSWORD}@127.0.0.1:4222")
    assert PASSWORD not in str(info.value)


def test_nats_file_settings_are_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # an actor started elsewhere still finds the files
    settings = Settings(nats_creds_file="user.creds", nats_tls_ca_file="certs/ca.pem")
    assert settings.nats_creds_file == tmp_path / "user.creds"
    assert settings.nats_tls_ca_file == tmp_path / "certs" / "ca.pem"
