"""Pytest plugin: a real ``nats-server`` and clients connected to it.

Enable it with ``pytest_plugins = ["handler_base.testing.nats_fixtures"]`` in a
``conftest.py``. Fixtures:

* ``nats_server``: a started :class:`~handler_base.messaging.server.NatsServer` (JetStream on),
  one per test, stopped afterwards.
* ``nats_server_factory``: starts servers with your own config or arguments (auth, TLS;
  :mod:`handler_base.testing.nats_auth` makes the certificates, creds files and configs).
* ``nats_settings``: :class:`~handler_base.Settings` pointing at ``nats_server``, with short
  timeouts and reconnect waits fit for tests.
* ``nats_client``: a client connected with those settings, closed afterwards.
* ``nats_connect``: connects more clients (e.g. one per side of a request), all closed
  afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS

from handler_base.messaging.connection import connect
from handler_base.messaging.server import NatsServer
from handler_base.settings import Settings

NatsServerFactory = Callable[..., NatsServer]
NatsConnect = Callable[..., Awaitable[NATS]]


def nats_test_settings(url: str, **overrides: Any) -> Settings:
    """Settings for a test server: fast reconnects and short timeouts."""
    values: dict[str, Any] = {
        "nats_url": url,
        "nats_name": "handler-base-tests",
        "nats_connect_timeout_s": 2.0,
        "nats_reconnect_wait_s": 0.05,
        "nats_reconnect_max_wait_s": 0.5,
        "nats_max_reconnect_attempts": -1,
        "nats_request_timeout_s": 5.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def nats_server_factory() -> Iterator[NatsServerFactory]:
    """Start NATS servers with ``NatsServer(**kwargs)``; all are closed after the test."""
    servers: list[NatsServer] = []

    def start(*, config: str | None = None, args: Sequence[str] = (), **kwargs: Any) -> NatsServer:
        server = NatsServer(config=config, args=args, **kwargs)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def nats_server(nats_server_factory: NatsServerFactory) -> NatsServer:
    """A started ``nats-server`` with JetStream, on a free loopback port."""
    return nats_server_factory()


@pytest.fixture
def nats_settings(nats_server: NatsServer) -> Settings:
    """Settings that point at ``nats_server``."""
    return nats_test_settings(nats_server.url)


@pytest_asyncio.fixture
async def nats_connect(nats_settings: Settings) -> AsyncIterator[NatsConnect]:
    """A function that connects clients to ``nats_server``; they are closed after the test.

    Call it as ``await nats_connect(settings=None, **overrides)``.
    """
    clients: list[NATS] = []

    async def open_client(settings: Settings | None = None, **overrides: Any) -> NATS:
        nc = await connect(settings or nats_settings, connect_wait_s=10.0, **overrides)
        clients.append(nc)
        return nc

    yield open_client
    for nc in clients:
        with contextlib.suppress(Exception):
            await nc.close()


@pytest_asyncio.fixture
async def nats_client(nats_connect: NatsConnect) -> NATS:
    """A client connected to ``nats_server``."""
    return await nats_connect()
