"""Connecting to NATS: Settings mapped to ``nats.connect`` options, reconnects with back-off.

nats-py waits a fixed ``reconnect_time_wait`` between reconnect attempts. Here the wait
doubles from ``NATS_RECONNECT_WAIT_S`` up to ``NATS_RECONNECT_MAX_WAIT_S`` (with a little
jitter), through nats-py's ``reconnect_to_server_handler`` hook, which picks the server to
try next and how long to wait first. The first attempt after a disconnect is immediate.

Connection events are logged in plain words on the ``handler_base.messaging.connection``
logger. Passwords, tokens and credentials are never logged; URLs are logged without their
user part. While connecting keeps failing, the warning for each reason is logged on its
attempts 1, 2, 4, 8, ... only.

Authentication: ``NATS_USER``/``NATS_PASSWORD``, ``NATS_TOKEN`` (or user info in the URL),
``NATS_CREDS_FILE`` (a ``.creds`` file: user JWT and NKey seed, operator mode); TLS with
``NATS_TLS_CA_FILE`` and, for mutual TLS, ``NATS_TLS_CERT_FILE``/``NATS_TLS_KEY_FILE``.
A refusal that retrying cannot fix (wrong credentials, a certificate not trusted) ends
:func:`connect` at once with an :class:`~handler_base.errors.UnavailableError` that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import math
import ssl
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import ParseResult, urlsplit

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.client import Server

from handler_base.errors import UnavailableError
from handler_base.messaging.backoff import backoff_delay
from handler_base.settings import Settings

logger = logging.getLogger(__name__)

DEFAULT_CONNECT_WAIT_S = 10.0
"""How long :func:`connect` keeps trying to make the first connection."""

RECONNECT_JITTER = 0.2


def redact_url(url: str | ParseResult | None) -> str:
    """A server URL without its user, password or token part, fit for logs."""
    if url is None:
        return "(none)"
    parts = urlsplit(url) if isinstance(url, str) else url
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def reconnect_handler(
    initial_s: float, max_s: float, *, jitter: float = RECONNECT_JITTER
) -> Callable[[list[Server], dict[str, Any]], tuple[Server | None, float]]:
    """A nats-py ``reconnect_to_server_handler`` that backs off exponentially.

    It picks the server with the fewest failed attempts since it last connected (the pool
    is shuffled before each round, so ties are broken at random) and waits
    :func:`~handler_base.messaging.backoff.backoff_delay` of that count: nothing for the
    first attempt, then ``initial_s``, doubling up to ``max_s``.
    """

    def choose(servers: list[Server], _info: dict[str, Any]) -> tuple[Server | None, float]:
        server = min(servers, key=lambda s: s.reconnects)
        return server, backoff_delay(server.reconnects, initial_s, max_s, jitter=jitter)

    return choose


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for the ``NATS_TLS_*`` settings; None when none are set.

    With none set, nats-py still speaks TLS to a ``tls://`` URL or a server that requires
    it, verifying the server against the system's certificate authorities.
    """
    ca, cert, key = (
        settings.nats_tls_ca_file,
        settings.nats_tls_cert_file,
        settings.nats_tls_key_file,
    )
    if ca is None and cert is None:
        return None
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(ca) if ca is not None else None
    )
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key is not None else None)
    return context


_CREDS_JWT = "BEGIN NATS USER JWT"
_CREDS_SEED = "BEGIN USER NKEY SEED"


def check_creds_file(path: Path) -> None:
    """Check that ``path`` is a NATS ``.creds`` file: a user JWT and a user NKey seed.

    nats-py reads it on every connect and loops for ever on a file without the JWT
    marker, so a bad file is caught here. Messages name the file, never its content.

    Raises:
        FileNotFoundError: there is no such file.
        ValueError: it is not a ``.creds`` file, or its seed is not a user NKey seed.
    """
    if not path.is_file():
        raise FileNotFoundError(f"NATS_CREDS_FILE does not exist: {path}")
    lines = path.read_text(errors="replace").splitlines()
    markers = [i for i, line in enumerate(lines) if _CREDS_JWT in line or _CREDS_SEED in line]
    found = {_CREDS_JWT if _CREDS_JWT in lines[i] else _CREDS_SEED: i for i in markers}
    if set(found) != {_CREDS_JWT, _CREDS_SEED} or max(found.values()) + 1 >= len(lines):
        raise ValueError(
            f"NATS_CREDS_FILE is not a NATS .creds file (a user JWT and an NKey seed): {path}"
        )
    jwt_line = lines[found[_CREDS_JWT] + 1].strip()
    seed_line = lines[found[_CREDS_SEED] + 1].strip()
    if jwt_line.count(".") != 2 or not seed_line.startswith("SU"):
        raise ValueError(f"NATS_CREDS_FILE has no user JWT or no user NKey seed: {path}")


def connect_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of ``nats.aio.client.Client.connect`` for ``settings``.

    Callbacks are not included (:func:`connect` adds its logging ones).

    Raises:
        FileNotFoundError: ``NATS_CREDS_FILE`` names a file that does not exist.
        ValueError: ``NATS_CREDS_FILE`` is not a ``.creds`` file.
        ImportError: a credentials file is set but the ``nkeys`` package is missing.
    """
    options: dict[str, Any] = {
        "servers": settings.nats_servers,
        "name": settings.nats_name,
        "connect_timeout": settings.nats_connect_timeout_s,
        "allow_reconnect": True,
        "reconnect_time_wait": settings.nats_reconnect_wait_s,
        "max_reconnect_attempts": settings.nats_max_reconnect_attempts,
        "reconnect_to_server_handler": reconnect_handler(
            settings.nats_reconnect_wait_s, settings.nats_reconnect_max_wait_s
        ),
    }
    if settings.nats_user is not None:
        options["user"] = settings.nats_user
    if settings.nats_password is not None:
        options["password"] = settings.nats_password.get_secret_value()
    if settings.nats_token is not None:
        options["token"] = settings.nats_token.get_secret_value()
    if settings.nats_creds_file is not None:
        check_creds_file(settings.nats_creds_file)
        if importlib.util.find_spec("nkeys") is None:
            raise ImportError("NATS_CREDS_FILE needs the nkeys package: install nats-py[nkeys]")
        options["user_credentials"] = str(settings.nats_creds_file)
    if (context := tls_context(settings)) is not None:
        options["tls"] = context
    if settings.nats_tls_hostname is not None:
        options["tls_hostname"] = settings.nats_tls_hostname
    return options


_CONNECTION_LOST = (
    nats.errors.UnexpectedEOF,
    nats.errors.StaleConnectionError,
    ConnectionError,
    TimeoutError,
)


_REFUSED_CREDENTIALS = (
    "authorization violation",
    "authentication expired",
    "authentication revoked",
)


def refusal(exc: BaseException) -> str | None:
    """Why the server refused us, when retrying cannot help (None for other errors).

    Wrong or missing credentials, and TLS certificates that one side does not accept.
    """
    text = str(exc).lower()
    if isinstance(exc, nats.errors.AuthorizationError) or any(
        words in text for words in _REFUSED_CREDENTIALS
    ):
        return (
            "the server refused the credentials "
            "(NATS_USER/NATS_PASSWORD, NATS_TOKEN or NATS_CREDS_FILE)"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "the server's TLS certificate is not trusted (NATS_TLS_CA_FILE)"
    if isinstance(exc, ssl.SSLError) and "certificate" in text:
        return (
            "the server did not accept our TLS client certificate "
            "(NATS_TLS_CERT_FILE/NATS_TLS_KEY_FILE)"
        )
    return None


class _ConnectionLog:
    """The logging callbacks of one connection; remembers the server URL it last reached.

    Args:
        nc: The client.
        servers: Its server URLs.
        give_up_after: Refusals in a row (see :func:`refusal`) that end the first
            connection (:attr:`refused` is set); 0 never does.
    """

    def __init__(self, nc: NATS, servers: Sequence[str], give_up_after: int = 0) -> None:
        self._nc = nc
        self.server = ", ".join(redact_url(s) for s in servers)
        self.last_error: BaseException | None = None
        self.last_refusal: BaseException | None = None
        self.refused = asyncio.Event()
        self._give_up_after = give_up_after
        self._refusals = 0
        self._failures: dict[str, int] = {}
        """Failed attempts since the last connection, by reason."""

    def _log_failed_attempt(self, exc: BaseException) -> None:
        """A warning for a failed attempt; for each reason, on attempts 1, 2, 4, 8, ..."""
        reason = _describe(exc)
        count = self._failures[reason] = self._failures.get(reason, 0) + 1
        if count & (count - 1) == 0:
            again = f" (attempt {count} with this error)" if count > 1 else ""
            logger.warning("cannot reach the NATS server at %s: %s%s", self.server, reason, again)

    def note_server(self) -> None:
        """Connected: remember where, and start counting failures afresh."""
        self._failures.clear()
        if self._nc.connected_url is not None:
            self.server = redact_url(self._nc.connected_url)

    async def on_error(self, exc: Exception) -> None:
        self.last_error = exc
        if refusal(exc) is None:
            self._refusals = 0
        else:
            self.last_refusal = exc
            self._refusals += 1
        if self._give_up_after and self._refusals >= self._give_up_after:
            self.refused.set()
        if not self._nc.is_connected:
            self._log_failed_attempt(exc)
        elif isinstance(exc, _CONNECTION_LOST):
            # Followed by a reconnect, which is logged on its own.
            logger.warning(
                "the connection to the NATS server at %s broke: %s", self.server, _describe(exc)
            )
        else:
            logger.error("NATS error on the connection to %s: %s", self.server, _describe(exc))

    async def on_disconnected(self) -> None:
        if self._nc.is_closed:
            logger.info("disconnected from the NATS server at %s", self.server)
        else:
            logger.warning(
                "lost the connection to the NATS server at %s; reconnecting", self.server
            )

    async def on_reconnected(self) -> None:
        self.note_server()
        logger.info("reconnected to the NATS server at %s", self.server)

    async def on_closed(self) -> None:
        logger.info("closed the NATS connection (last server %s)", self.server)

    async def on_lame_duck(self) -> None:
        logger.warning(
            "the NATS server at %s is shutting down; the client will move to another one",
            self.server,
        )

    async def on_discovered(self) -> None:
        logger.info("discovered a new NATS server in the cluster")

    def callbacks(self) -> dict[str, Callable[..., Awaitable[None]]]:
        return {
            "error_cb": self.on_error,
            "disconnected_cb": self.on_disconnected,
            "reconnected_cb": self.on_reconnected,
            "closed_cb": self.on_closed,
            "lame_duck_mode_cb": self.on_lame_duck,
            "discovered_server_cb": self.on_discovered,
        }


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    described = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    why = refusal(exc)
    return f"{why}: {described}" if why is not None else described


async def flush(nc: NATS, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Wait until the server has processed everything this client sent so far.

    Call it after subscribing, before anything else may publish to the subject. It is
    ``nc.flush()`` made safe: in nats-py 2.16 ``flush()`` writes its PING straight to the
    socket, ahead of commands still in the client's write buffer (a SUB just made), so it
    can return before the server has the subscription. Here the client's flusher task
    gets to write that buffer first.

    Raises:
        nats.errors.FlushTimeoutError: no answer within ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(timeout, 1.0)
    # nats-py signals nothing when its buffer is written; yielding lets its flusher run.
    while nc.pending_data_size > 0 and nc.is_connected and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0)
    await nc.flush(math.ceil(timeout))


async def _first_connection(
    nc: NATS, options: dict[str, Any], wait_s: float | None, refused: asyncio.Event
) -> None:
    """``nc.connect(**options)``, given up after ``wait_s`` seconds or once ``refused`` is set.

    Raises:
        TimeoutError: not connected in time, or refused.
    """
    attempt = asyncio.ensure_future(nc.connect(**options))
    refusal_seen = asyncio.ensure_future(refused.wait())
    try:
        done, _ = await asyncio.wait(
            {attempt, refusal_seen}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        refusal_seen.cancel()
    if attempt in done:
        return attempt.result()
    # Not asyncio.wait_for: nats-py's retry loop can swallow one cancellation (an inner
    # wait_for racing it, on Python 3.11), and wait_for would then wait for ever.
    while not attempt.done():
        attempt.cancel()
        await asyncio.wait({attempt}, timeout=0.1)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        attempt.result()
    if refused.is_set():
        raise TimeoutError("refused")
    raise TimeoutError(f"no connection within {wait_s:g} s")


async def connect(
    settings: Settings | None = None,
    *,
    connect_wait_s: float | None = DEFAULT_CONNECT_WAIT_S,
    **overrides: Any,
) -> NATS:
    """Connect to NATS as ``settings`` say, with reconnects, back-off and logging.

    Once connected, the client reconnects on its own after a lost connection (for ever by
    default, see ``NATS_MAX_RECONNECT_ATTEMPTS``) and resubscribes every subscription.

    Args:
        settings: Where and how to connect; ``Settings()`` (the environment) when None.
        connect_wait_s: How long to keep trying to make the first connection (nats-py
            retries it every ``NATS_RECONNECT_WAIT_S``); None keeps trying for ever.
        **overrides: ``nats.aio.client.Client.connect`` keyword arguments that replace the
            ones made from ``settings`` (callbacks included).

    Returns:
        The connected client. Close it with ``await nc.drain()`` or ``await nc.close()``.

    Raises:
        UnavailableError: no server could be reached in time, or every server refused us
            for a reason retrying cannot fix (credentials, TLS certificates; that ends it
            at once unless ``connect_wait_s`` is None); the message says why, without
            secrets.
        FileNotFoundError, ValueError: ``NATS_CREDS_FILE`` is missing or not a creds file.
    """
    settings = settings if settings is not None else Settings()
    nc = NATS()
    options = connect_options(settings)
    servers = len(settings.nats_servers) if connect_wait_s is not None else 0
    log = _ConnectionLog(nc, settings.nats_servers, give_up_after=servers)
    options.update(log.callbacks())
    options.update(overrides)
    try:
        await _first_connection(nc, options, connect_wait_s, log.refused)
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        with contextlib.suppress(Exception):
            await nc.close()
        # The refusal, not the broken pipe that may follow it.
        reason = log.last_refusal if log.refused.is_set() else log.last_error
        reason = reason if reason is not None else exc
        waited = (
            ""
            if connect_wait_s is None or log.refused.is_set()
            else f" within {connect_wait_s:g} s"
        )
        raise UnavailableError(
            f"could not connect to NATS at {log.server}{waited}: {_describe(reason)}"
        ) from exc
    log.note_server()
    logger.info("connected to the NATS server at %s as %r", log.server, settings.nats_name)
    return nc
