"""Connecting: Settings to options, auth, TLS, failures, reconnects, and no secrets in logs."""

from __future__ import annotations

import datetime
import importlib.util
import ipaddress
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
    connect,
    connect_options,
    reconnect_handler,
    redact_url,
    tls_context,
)
from handler_base.settings import Settings
from handler_base.testing.nats import NatsServer, free_port
from handler_base.testing.nats_fixtures import NatsConnect, NatsServerFactory, nats_test_settings

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
    creds = tmp_path / "user.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\n...\n")
    if importlib.util.find_spec("nkeys") is None:
        with pytest.raises(ImportError, match="nkeys"):
            connect_options(Settings(nats_creds_file=creds))
    else:
        assert connect_options(Settings(nats_creds_file=creds))["user_credentials"] == str(creds)


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


async def test_connect_and_log_without_secrets(
    nats_server_factory: NatsServerFactory, caplog: pytest.LogCaptureFixture, eventually: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    server = nats_server_factory(config=f'authorization {{ user: alice, password: "{PASSWORD}" }}')
    settings = nats_test_settings(
        f"nats://alice:{PASSWORD}@127.0.0.1:{server.port}",  # in the URL too
        nats_user="alice",
        nats_password=SecretStr(PASSWORD),
    )
    nc = await connect(settings)
    try:
        assert nc.is_connected
        server.restart()  # reconnecting logs too
        await eventually(lambda: nc.is_connected and nc.stats["reconnects"] == 1)
    finally:
        await nc.close()
    assert "connected to the NATS server at nats://127.0.0.1" in caplog.text
    assert PASSWORD not in caplog.text


async def test_wrong_password_is_unavailable_without_the_secret(
    nats_server_factory: NatsServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = nats_server_factory(config='authorization { user: alice, password: "right" }')
    settings = nats_test_settings(server.url, nats_user="alice", nats_password=SecretStr(PASSWORD))
    with pytest.raises(UnavailableError, match=r"(?i)authorization") as info:
        await connect(settings, connect_wait_s=1.0)
    assert PASSWORD not in str(info.value)
    assert PASSWORD not in caplog.text


async def test_token_auth(
    nats_server_factory: NatsServerFactory, nats_connect: NatsConnect
) -> None:
    server = nats_server_factory(config=f'authorization {{ token: "{TOKEN}" }}')
    nc = await nats_connect(nats_test_settings(server.url, nats_token=SecretStr(TOKEN)))
    assert nc.is_connected
    with pytest.raises(UnavailableError):
        await connect(nats_test_settings(server.url), connect_wait_s=1.0)


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


# --- TLS ----------------------------------------------------------------------------


def _make_certs(folder: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1, made here (no files are shipped)."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def build(subject: str, issuer_key: Any, issuer: str, key: Any, ca: bool) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    server_key = ec.generate_private_key(ec.SECP256R1())
    paths = {name: folder / f"{name}.pem" for name in ("ca", "cert", "key")}
    paths["ca"].write_bytes(
        build("test-ca", ca_key, "test-ca", ca_key, True).public_bytes(serialization.Encoding.PEM)
    )
    paths["cert"].write_bytes(
        build("127.0.0.1", ca_key, "test-ca", server_key, False).public_bytes(
            serialization.Encoding.PEM
        )
    )
    paths["key"].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


async def test_tls_with_our_ca(
    nats_server_factory: NatsServerFactory, nats_connect: NatsConnect, tmp_path: Path
) -> None:
    certs = _make_certs(tmp_path)
    server = nats_server_factory(
        config=f'tls {{ cert_file: "{certs["cert"]}", key_file: "{certs["key"]}" }}',
        scheme="tls",
    )
    settings = nats_test_settings(server.url, nats_tls_ca_file=certs["ca"])
    context = tls_context(settings)
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED

    nc = await nats_connect(settings)
    assert nc.is_connected
    # Without our CA the server's certificate is not trusted.
    with pytest.raises(UnavailableError, match=r"(?i)certificate"):
        await connect(nats_test_settings(server.url), connect_wait_s=1.0)
