"""Every NATS auth method against a real nats-server configured for it.

User/password, token, a credentials file in operator (JWT) mode, TLS with our CA, and
mutual TLS: the right secret connects, a request/reply round-trips through ``request``
and ``RequestServer``, and it does again after the server restarts; a wrong one ends in
one clear ``UnavailableError`` at once. Secrets (passwords, tokens, NKey seeds, private
keys, URL user info) are in no log line and no error, whatever happens.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from pydantic import SecretStr

from handler_base.errors import UnavailableError
from handler_base.messages import ChatRequest, ChatResponse
from handler_base.messaging import RequestServer, connect, request
from handler_base.settings import Settings
from handler_base.testing.nats import NatsServer, free_port
from handler_base.testing.nats_auth import (
    make_operator_auth,
    make_tls_files,
    tls_config,
    token_config,
    user_password_config,
)
from handler_base.testing.nats_fixtures import NatsServerFactory, nats_test_settings

pytestmark = pytest.mark.integration

SUBJECT = "test.auth.echo"
USER = "alice"
PASSWORD = "pa55-w0rd-do-not-log"
WRONG_PASSWORD = "wr0ng-pa55-do-not-log"
TOKEN = "t0ken-do-not-log"
WRONG_TOKEN = "wr0ng-t0ken-do-not-log"
CONNECT_WAIT_S = 10.0
"""Long enough for any first connection here; a refusal ends it at once."""


@dataclass
class AuthCase:
    """A server config and the settings that should, and should not, get in."""

    config: str
    right: dict[str, Any]
    wrong: dict[str, Any]
    refusal: str
    """A regex the error of a wrong attempt matches."""
    secrets: list[str] = field(default_factory=list)
    """Texts that must appear in no log line and no error."""
    scheme: str = "nats"
    url_userinfo: str | None = None
    """User info put into the URL of the wrong attempt (``user:pass`` or a token)."""


def user_password(_folder: Path) -> AuthCase:
    return AuthCase(
        config=user_password_config(USER, PASSWORD),
        right={"nats_user": USER, "nats_password": SecretStr(PASSWORD)},
        wrong={"nats_user": USER, "nats_password": SecretStr(WRONG_PASSWORD)},
        refusal="refused the credentials",
        secrets=[PASSWORD, WRONG_PASSWORD],
    )


def user_password_in_url(_folder: Path) -> AuthCase:
    return AuthCase(
        config=user_password_config(USER, PASSWORD),
        right={"url_userinfo": f"{USER}:{PASSWORD}"},
        wrong={},
        url_userinfo=f"{USER}:{WRONG_PASSWORD}",
        refusal="refused the credentials",
        secrets=[PASSWORD, WRONG_PASSWORD],
    )


def token(_folder: Path) -> AuthCase:
    return AuthCase(
        config=token_config(TOKEN),
        right={"nats_token": SecretStr(TOKEN)},
        wrong={"nats_token": SecretStr(WRONG_TOKEN)},
        refusal="refused the credentials",
        secrets=[TOKEN, WRONG_TOKEN],
    )


def creds_file(folder: Path) -> AuthCase:
    auth = make_operator_auth(folder / "trusted")
    # A user of an account that this server's operator never signed.
    stranger = make_operator_auth(folder / "stranger")
    return AuthCase(
        config=auth.server_config,
        right={"nats_creds_file": auth.creds_file},
        wrong={"nats_creds_file": stranger.creds_file},
        refusal="refused the credentials",
        secrets=[auth.user_seed, stranger.user_seed],
    )


def tls(folder: Path) -> AuthCase:
    files = make_tls_files(folder)
    return AuthCase(
        config=tls_config(files),
        scheme="tls",
        right={"nats_tls_ca_file": files.ca},
        wrong={},  # the system's CAs do not know ours
        refusal="TLS certificate is not trusted",
        secrets=[_pem_body(files.server_key)],
    )


def mutual_tls(folder: Path) -> AuthCase:
    files = make_tls_files(folder)
    return AuthCase(
        config=tls_config(files, verify_clients=True),
        scheme="tls",
        right={
            "nats_tls_ca_file": files.ca,
            "nats_tls_cert_file": files.client_cert,
            "nats_tls_key_file": files.client_key,
        },
        wrong={"nats_tls_ca_file": files.ca},  # no client certificate
        refusal="did not accept our TLS client certificate",
        secrets=[_pem_body(files.client_key), _pem_body(files.server_key)],
    )


def tls_by_name(folder: Path) -> AuthCase:
    files = make_tls_files(folder, hosts=("nats.example.test",))  # not 127.0.0.1
    return AuthCase(
        config=tls_config(files),
        scheme="tls",
        right={"nats_tls_ca_file": files.ca, "nats_tls_hostname": "nats.example.test"},
        wrong={"nats_tls_ca_file": files.ca},  # the certificate is not for 127.0.0.1
        refusal="TLS certificate is not trusted",
        secrets=[_pem_body(files.server_key)],
    )


def tls_and_password(folder: Path) -> AuthCase:
    files = make_tls_files(folder)
    return AuthCase(
        config=tls_config(files) + user_password_config(USER, PASSWORD),
        scheme="tls",
        right={
            "nats_tls_ca_file": files.ca,
            "nats_user": USER,
            "nats_password": SecretStr(PASSWORD),
        },
        wrong={
            "nats_tls_ca_file": files.ca,
            "nats_user": USER,
            "nats_password": SecretStr(WRONG_PASSWORD),
        },
        refusal="refused the credentials",
        secrets=[PASSWORD, WRONG_PASSWORD],
    )


def _pem_body(path: Path) -> str:
    """The longest base64 line of a PEM file: a piece of the key that a leak would show."""
    return max(path.read_text().splitlines(), key=len)


CASES: dict[str, Callable[[Path], AuthCase]] = {
    "user_password": user_password,
    "user_password_in_url": user_password_in_url,
    "token": token,
    "creds_file": creds_file,
    "tls": tls,
    "mutual_tls": mutual_tls,
    "tls_by_name": tls_by_name,
    "tls_and_password": tls_and_password,
}


@dataclass
class Secured:
    server: NatsServer
    case: AuthCase

    def settings(self, values: dict[str, Any], userinfo: str | None = None) -> Settings:
        values = dict(values)
        userinfo = values.pop("url_userinfo", userinfo)
        at = f"{userinfo}@" if userinfo else ""
        return nats_test_settings(
            f"{self.server.scheme}://{at}{self.server.host}:{self.server.port}", **values
        )

    @property
    def right(self) -> Settings:
        return self.settings(self.case.right)

    @property
    def wrong(self) -> Settings:
        return self.settings(self.case.wrong, self.case.url_userinfo)

    def assert_no_secret_in(self, *texts: str) -> None:
        for secret in self.case.secrets:
            for text in texts:
                assert secret not in text


@pytest.fixture(params=list(CASES))
def secured(
    request: pytest.FixtureRequest, nats_server_factory: NatsServerFactory, tmp_path: Path
) -> Secured:
    case = CASES[request.param](tmp_path)
    server = nats_server_factory(config=case.config, scheme=case.scheme)
    return Secured(server, case)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log record of every logger, nats-py's included, at DEBUG."""
    caplog.set_level(logging.DEBUG)
    return caplog


async def echo(question: ChatRequest) -> ChatResponse:
    return ChatResponse(response=f"echo: {question.query}", request_id=question.request_id)


async def ask(nc: NATS, query: str) -> ChatResponse:
    return await request(nc, SUBJECT, ChatRequest(query=query), ChatResponse, timeout=5)


async def test_the_right_secret_round_trips_and_survives_a_restart(
    secured: Secured, logs: pytest.LogCaptureFixture, eventually: Any
) -> None:
    server_side = await connect(secured.right, connect_wait_s=CONNECT_WAIT_S)
    client_side = await connect(secured.right, connect_wait_s=CONNECT_WAIT_S)
    sides = (server_side, client_side)
    try:
        async with RequestServer(server_side, SUBJECT, echo, ChatRequest):
            assert (await ask(client_side, "hello")).response == "echo: hello"

            await asyncio.to_thread(secured.server.restart)
            await eventually(
                lambda: all(nc.is_connected and nc.stats["reconnects"] >= 1 for nc in sides),
                what="both sides to reconnect with their credentials",
            )
            for _ in range(50):  # the server side's resubscription may land a moment later
                try:
                    answer = await ask(client_side, "again")
                    break
                except UnavailableError:
                    await asyncio.sleep(0.1)
            assert answer.response == "echo: again"
    finally:
        await client_side.close()
        await server_side.close()
    assert "reconnected to the NATS server at" in logs.text
    secured.assert_no_secret_in(logs.text)


async def test_a_wrong_secret_is_one_clear_error_at_once(
    secured: Secured, logs: pytest.LogCaptureFixture
) -> None:
    async with asyncio.timeout(CONNECT_WAIT_S + 5):  # no hang
        with pytest.raises(UnavailableError, match=secured.case.refusal) as info:
            await connect(secured.wrong, connect_wait_s=CONNECT_WAIT_S)
    message = str(info.value)
    assert message.startswith(f"could not connect to NATS at {secured.server.scheme}://127.0.0.1:")
    assert "within" not in message  # ended by the refusal, not by the wait
    secured.assert_no_secret_in(message, repr(info.value), str(info.value.__cause__), logs.text)
    assert any(
        r.name == "handler_base.messaging.connection" and secured.case.refusal in r.getMessage()
        for r in logs.records
    )


async def test_a_server_that_is_gone_is_unavailable_without_the_secret(
    logs: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    settings = nats_test_settings(
        f"nats://{USER}:{PASSWORD}@127.0.0.1:{port}, nats://{TOKEN}@127.0.0.1:{port}",
        nats_user=USER,
        nats_password=SecretStr(PASSWORD),
    )
    with pytest.raises(UnavailableError, match="could not connect to NATS") as info:
        await connect(settings, connect_wait_s=0.5)
    # Attempts fail every 50 ms: the same warning is repeated on attempts 1, 2, 4, ... only.
    assert "(attempt 2 with this error)" in logs.text
    assert "(attempt 3 with this error)" not in logs.text
    for text in (str(info.value), repr(info.value), logs.text):
        assert PASSWORD not in text
        assert TOKEN not in text
    assert f"nats://127.0.0.1:{port}" in str(info.value)
