"""The NATS bridge: chat and voice requests over NATS answered by the Serve handlers.

:class:`Bridge` does the work in one asyncio event loop: it connects to NATS (and keeps
reconnecting), takes the requests of each route of its table
(:meth:`BridgeConfig.route_table <pipeline_bridge.config.BridgeConfig.route_table>`:
``ai.chat.request`` to the chat handler, ``voice.request`` to the voice handler, and
any route added there), calls the handler through the route's client
(:class:`~handler_base.clients.ChatClient`, :class:`~handler_base.clients.VoiceClient`:
a Ray handle inside Ray) and replies. :class:`NATSBridge` is the Ray actor around it:
named, restartable, several sharing the work; :func:`start_bridges` and
:func:`stop_bridges` run a set of them.

Two delivery modes (:attr:`BridgeConfig.mode`):

* ``core``: a :class:`~handler_base.messaging.RequestServer` per subject, in a queue
  group. At most ``max_in_flight`` handler calls run at once per actor and
  ``max_waiting`` more wait; past that a request is answered ``unavailable`` at once.
* ``at_least_once``: a JetStream stream captures the subjects; the actors share one
  durable consumer and ack a request only after its reply is sent (and stored in the
  replies bucket, :mod:`pipeline_bridge.dedup`). A request whose bridge dies is
  delivered again; a repeat of a request is answered with the stored reply; one that
  fails ``max_deliver`` deliveries goes to the dead-letter subject. The reply goes to
  the ``Reply-To`` header (see :func:`handler_base.messaging.request_durably`).

Every request is answered: a malformed one ``invalid_request``, one past its deadline
(``X-Request-Timeout-S`` header, else ``deadline_s``) ``timeout``, a handler's error
with its code. One trace per request: the NATS span from the message headers, the
bridge span, then the handler's spans (the clients pass the trace context along).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.js.api import StorageType
from pydantic import BaseModel

from handler_base.clients import ServiceClient
from handler_base.errors import (
    InternalError,
    InvalidRequestError,
    NotFoundError,
    PlatformError,
    RequestTimeoutError,
    TooLargeError,
    UnavailableError,
)
from handler_base.messaging import (
    REPLY_TO_HEADER,
    REQUEST_ID_HEADER,
    TIMEOUT_HEADER,
    ConsumerSpec,
    DeadLetterForwarder,
    Delivery,
    DurableConsumer,
    Reject,
    RequestServer,
    Retry,
    connect,
    current_message,
    decode_model,
    encode_error,
    encode_model,
    ensure_stream,
)
from handler_base.messaging.jetstream import MSG_ID_HEADER
from handler_base.settings import Settings
from handler_base.telemetry import setup_telemetry, span
from pipeline_bridge.config import BridgeConfig
from pipeline_bridge.dedup import ReplyStore, next_step, reply_key
from pipeline_bridge.routes import Route, bind_routes

logger = logging.getLogger(__name__)

REJECT_HEADROOM = 32
"""Core mode: tasks a RequestServer may run beyond the admitted requests, so that the
requests over the limit reach the bridge (and are refused at once) instead of waiting
in the subscription's buffer."""

FINAL_ERRORS = (InvalidRequestError, TooLargeError, NotFoundError)
"""Errors that another try cannot change: stored, so a repeat gets the same answer."""

WAIT_POLL_S = 0.25
"""How often a repeat checks whether the request it repeats has been answered."""


def _request_key(headers: Mapping[str, str], request: BaseModel, stream_seq: int) -> str:
    """What makes two messages the same request: ``Nats-Msg-Id``, else the request id."""
    msg_id = headers.get(MSG_ID_HEADER)
    if msg_id:
        return f"msg-id:{msg_id}"
    request_id = getattr(request, "request_id", None) or headers.get(REQUEST_ID_HEADER)
    if isinstance(request_id, str) and request_id:
        return f"request-id:{request_id}"
    return f"seq:{stream_seq}"


class Bridge:
    """The bridge's work in the current event loop; see the module docstring.

    Args:
        config: Subjects, limits and mode.
        settings: NATS connection and the handler clients' settings; the environment's
            when None.
        routes: The routes to serve, each with its own call; when None, the config's
            :meth:`~pipeline_bridge.config.BridgeConfig.route_table` through its clients
            (made here, closed by :meth:`stop`).
    """

    def __init__(
        self,
        config: BridgeConfig,
        settings: Settings | None = None,
        routes: Sequence[Route] | None = None,
    ) -> None:
        self.config = config
        self.settings = settings if settings is not None else Settings()
        self._clients: list[ServiceClient] = []
        if routes is None:
            routes, self._clients = bind_routes(config.route_table(), self.settings)
        self.routes = list(routes)
        self._routes_by_subject = {r.subject: r for r in routes}
        self._slots = asyncio.Semaphore(config.max_in_flight)
        self._admitted = 0
        self._nc: NATS | None = None
        self._servers: list[RequestServer[Any]] = []
        self._consumers: list[DurableConsumer] = []
        self._forwarder: DeadLetterForwarder | None = None
        self._store: ReplyStore | None = None
        self._handling: set[str] = set()
        """At-least-once mode: the requests (reply keys) this bridge is handling now."""
        self._serving = asyncio.Event()
        self.stats: dict[str, int] = {"answered": 0, "errors": 0, "handler_calls": 0, "repeats": 0}

    @property
    def admitted(self) -> int:
        """Core mode: requests taken in, running or waiting for a slot."""
        return self._admitted

    @property
    def is_serving(self) -> bool:
        """True once every route is being served."""
        return self._serving.is_set()

    async def wait_serving(self, timeout_s: float) -> bool:
        """Wait until the bridge serves; False when it does not within ``timeout_s``."""
        try:
            await asyncio.wait_for(self._serving.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    # --- lifecycle --------------------------------------------------------------------

    async def start(self, connect_wait_s: float | None = None) -> None:
        """Connect and serve every route.

        Args:
            connect_wait_s: How long to try to reach NATS; None waits as long as it takes.

        Raises:
            UnavailableError: NATS was not reached within ``connect_wait_s`` (the message
                says why).
        """
        config = self.config
        self._nc = nc = await connect(self.settings, connect_wait_s=connect_wait_s)
        if config.mode == "core":
            await self._warn_if_captured(nc)
            for route in self.routes:
                server: RequestServer[Any] = RequestServer(
                    nc,
                    route.subject,
                    self._core_handler(route),
                    route.request_type,
                    queue=config.queue_group,
                    max_in_flight=config.max_in_flight + config.max_waiting + REJECT_HEADROOM,
                )
                self._servers.append(await server.start())
        else:
            await self._start_at_least_once(nc)
        self._serving.set()
        logger.info(
            "the NATS bridge serves %s (%s mode)",
            ", ".join(r.subject for r in self.routes),
            config.mode,
        )

    async def _warn_if_captured(self, nc: NATS) -> None:
        """Core mode: say so when a stream captures a subject (left from at-least-once)."""
        js = nc.jetstream()
        for route in self.routes:
            with contextlib.suppress(Exception):
                stream = await js.find_stream_name_by_subject(route.subject)
                logger.warning(
                    "the JetStream stream %s captures %s: core requests on it get the "
                    "stream's acknowledgement before the bridge's reply; delete the stream "
                    "or serve in at_least_once mode",
                    stream,
                    route.subject,
                )

    async def _start_at_least_once(self, nc: NATS) -> None:
        config = self.config
        js = nc.jetstream()
        await ensure_stream(
            js,
            config.stream,
            [r.subject for r in self.routes],
            max_age_s=config.stream_max_age_s,
            duplicate_window_s=min(120.0, config.stream_max_age_s),
            storage=StorageType.FILE,
        )
        self._store = await ReplyStore.open(js, config.replies_bucket, config.replies_ttl_s)
        self._forwarder = DeadLetterForwarder(
            nc,
            config.stream,
            config.durable,
            config.dead_letter_subject,
            queue=f"{config.durable}-dead-letters",
        )
        await self._forwarder.start()
        spec = ConsumerSpec(
            stream=config.stream,
            durable=config.durable,
            filter_subjects=[r.subject for r in self.routes],
            ack_wait_s=config.ack_wait_s,
            max_deliver=config.max_deliver,
            max_in_flight=config.max_in_flight,
            fetch_timeout_s=1.0,
            drain_timeout_s=config.ack_wait_s,
        )
        consumer = DurableConsumer(nc, spec)
        await consumer.ensure()
        consumer.start(self._answer_delivery)
        self._consumers.append(consumer)

    async def stop(self) -> None:
        """Finish the requests in flight, then close the connection."""
        self._serving.clear()
        for server in self._servers:
            await server.drain(self.config.deadline_s)
        for consumer in self._consumers:
            await consumer.stop()
        if self._forwarder is not None:
            await self._forwarder.stop()
        self._servers, self._consumers, self._forwarder = [], [], None
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
            self._nc = None
        for client in self._clients:
            await client.aclose()

    # --- one request --------------------------------------------------------------------

    def _deadline(self, headers: Mapping[str, str], sent_at: float) -> float:
        """The wall-clock time by which the request must be answered."""
        seconds = self.config.deadline_s
        asked = headers.get(TIMEOUT_HEADER)
        if asked:
            try:
                value = float(asked)
            except ValueError:
                value = 0.0
            if value > 0:
                seconds = min(value, self.config.max_deadline_s)
        return sent_at + seconds

    async def _call(self, route: Route, request: BaseModel, deadline: float) -> BaseModel:
        """Call the route's handler within the deadline and the in-flight limit."""
        remaining = deadline - time.time()
        if remaining <= 0:
            raise RequestTimeoutError(
                f"the {route.name} request waited past its deadline before it could start"
            )
        with span(f"bridge.{route.name}", {"messaging.destination.name": route.subject}):
            timeout = asyncio.timeout(remaining)
            try:
                async with timeout, self._slots:
                    self.stats["handler_calls"] += 1
                    return await route.call(request)
            except TimeoutError as exc:
                if timeout.expired():
                    raise RequestTimeoutError(
                        f"the {route.name} handler did not answer within the request's "
                        f"deadline ({remaining:.1f} s left when it started)"
                    ) from exc
                raise

    def _core_handler(self, route: Route) -> Callable[[Any], Awaitable[BaseModel]]:
        async def handle(request: BaseModel) -> BaseModel:
            msg = current_message()
            headers = (msg.headers if msg is not None else None) or {}
            config = self.config
            if self._admitted >= config.max_in_flight + config.max_waiting:
                self.stats["errors"] += 1
                raise UnavailableError(
                    f"the NATS bridge is busy ({config.max_in_flight} requests in flight and "
                    f"{config.max_waiting} waiting); try again shortly"
                )
            self._admitted += 1
            try:
                reply = await self._call(route, request, self._deadline(headers, time.time()))
            except PlatformError:
                self.stats["errors"] += 1
                raise
            finally:
                self._admitted -= 1
            self.stats["answered"] += 1
            return reply

        return handle

    async def _publish(self, subject: str, data: bytes, headers: dict[str, str] | None) -> None:
        assert self._nc is not None
        try:
            await self._nc.publish(subject, data, headers=headers)
        except nats.errors.MaxPayloadError:
            error = InternalError(
                f"the reply is {len(data)} bytes, over the NATS server's limit of "
                f"{self._nc.max_payload} bytes"
            )
            body, error_headers = encode_error(error)
            await self._nc.publish(subject, body, headers=error_headers)

    async def _answer_delivery(self, delivery: Delivery) -> None:
        """At-least-once mode: answer one delivery; its outcome decides the ack."""
        route = self._routes_by_subject.get(delivery.subject)
        if route is None:
            raise Reject(f"the bridge serves no route for {delivery.subject}")
        reply_to = delivery.headers.get(REPLY_TO_HEADER)
        if not reply_to:
            raise Reject(
                f"no {REPLY_TO_HEADER} header: a request stored by the stream can only be "
                "answered to the subject that header names (see request_durably)"
            )
        try:
            request = decode_model(delivery.data, route.request_type)
        except PlatformError as error:
            self.stats["errors"] += 1
            await self._publish(reply_to, *encode_error(error))
            return
        store = self._store
        assert store is not None
        seq = delivery.stream_sequence
        key = reply_key(route.subject, _request_key(delivery.headers, request, seq))
        deadline = self._deadline(delivery.headers, delivery.msg.metadata.timestamp.timestamp())
        stored = await store.claim(key, seq)
        while stored is not None:
            step = next_step(stored, seq, key in self._handling, self.config.ack_wait_s)
            if step == "nothing":
                return
            if step == "send_stored":
                self.stats["repeats"] += 1
                await self._publish(reply_to, stored.data.encode(), stored.headers or None)
                if stored.stream_seq == seq:
                    await store.mark_sent(key, stored)
                return
            if step == "take_over":
                await store.hold(key, seq)
                break
            # The same request is being handled (here, or by a live bridge): wait for it.
            if time.time() >= deadline:
                await self._publish(
                    reply_to,
                    *encode_error(RequestTimeoutError("the same request is still being handled")),
                )
                return
            await asyncio.sleep(WAIT_POLL_S)
            await delivery.in_progress()
            found = await store.get(key)
            stored = found if found is not None else await store.claim(key, seq)

        self._handling.add(key)
        try:
            await self._handle_claimed(delivery, route, request, key, reply_to, deadline)
        finally:
            self._handling.discard(key)

    async def _handle_claimed(
        self,
        delivery: Delivery,
        route: Route,
        request: BaseModel,
        key: str,
        reply_to: str,
        deadline: float,
    ) -> None:
        """Call the handler for a request this bridge has claimed, then reply or retry."""
        store = self._store
        assert store is not None
        seq = delivery.stream_sequence
        heartbeat = asyncio.create_task(self._keep_in_progress(delivery, key))
        outcome: BaseModel | PlatformError
        try:
            outcome = await self._call(route, request, deadline)
        except PlatformError as error:
            outcome = error
        except Exception:
            logger.exception("the %s handler call failed on %s", route.name, delivery.subject)
            outcome = InternalError(f"internal error while handling the {route.name} request")
        finally:
            # Stopped before the reply is stored, so that no heartbeat overwrites it.
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

        if not isinstance(outcome, PlatformError):
            await self._reply_once(key, seq, reply_to, encode_model(outcome), None)
            self.stats["answered"] += 1
            return
        self.stats["errors"] += 1
        if isinstance(outcome, FINAL_ERRORS):
            await self._reply_once(key, seq, reply_to, *encode_error(outcome))
            return
        # Not stored: a later delivery or repeat may fare better.
        await store.release(key)
        retry = isinstance(outcome, UnavailableError | InternalError)
        if retry and delivery.num_delivered < self.config.max_deliver:
            raise Retry(f"{outcome.code.value}: {outcome.message}") from outcome
        # A timeout (the requester no longer waits), or the last delivery: answer with the
        # error; after the last, the stream gives up and the message is dead-lettered.
        await self._publish(reply_to, *encode_error(outcome))
        if retry:
            raise Retry(f"{outcome.code.value} on the last delivery: {outcome.message}")

    async def _reply_once(
        self, key: str, seq: int, reply_to: str, data: bytes, headers: dict[str, str] | None
    ) -> None:
        """Store the reply, send it, and note it sent (a crash between leaves it to resend)."""
        assert self._store is not None
        record = await self._store.finish(key, seq, data, headers)
        await self._publish(reply_to, data, headers)
        try:
            await self._store.mark_sent(key, record)
        except nats.errors.Error as exc:
            # The reply is out: ack anyway. Only a redelivery (the ack lost too) sends it again.
            logger.warning("could not note the reply to message %d as sent: %s", seq, exc)

    async def _keep_in_progress(self, delivery: Delivery, key: str) -> None:
        """Restart the ack wait now and then, and tell the replies bucket this bridge lives."""
        assert self._store is not None
        interval = max(self.config.ack_wait_s / 3, 0.1)
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(nats.errors.Error):
                await delivery.in_progress()
                await self._store.hold(key, delivery.stream_sequence)


class NATSBridge:
    """The bridge as a Ray actor: it starts serving when made, and again after a restart.

    Make it with :func:`start_bridges` (which adds the Ray options: a name, restarts).

    Args:
        config: Subjects, limits and mode.
        settings: NATS and clients' settings; the environment's (in the actor) when None.
    """

    def __init__(self, config: BridgeConfig, settings: Settings | None = None) -> None:
        settings = settings if settings is not None else Settings()
        setup_telemetry(settings, service_name="nats-bridge")
        self.bridge = Bridge(config, settings)
        # An async actor's __init__ runs in its event loop; after a restart Ray runs it
        # again, so the bridge serves again with nobody to tell it.
        self._runner = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            await self.bridge.start()
        except Exception:
            logger.exception("the NATS bridge could not start")
            raise

    async def ready(self, timeout_s: float = 60.0) -> bool:
        """True once the bridge serves (False if not within ``timeout_s``)."""
        return await self.bridge.wait_serving(timeout_s)

    async def info(self) -> dict[str, Any]:
        """Counts of what this actor did, its process id, and whether it serves."""
        return {"pid": os.getpid(), "serving": self.bridge.is_serving, **self.bridge.stats}

    async def stop(self) -> None:
        """Finish the requests in flight and disconnect."""
        self._runner.cancel()
        await self.bridge.stop()


def actor_name(config: BridgeConfig, index: int) -> str:
    """The Ray name of bridge actor ``index``."""
    return f"{config.name_prefix}-{index}"


def start_bridges(
    count: int,
    config: BridgeConfig | None = None,
    settings: Settings | None = None,
    *,
    detached: bool = False,
    ready_timeout_s: float = 120.0,
    runtime_env: dict[str, Any] | None = None,
) -> list[Any]:
    """Start ``count`` bridge actors (or find the ones running) and wait until they serve.

    Each is named ``nats-bridge-<i>`` in the config's namespace, restarted by Ray when it
    dies (for ever), and retries its calls after a restart.

    Args:
        count: How many actors share the work.
        config: Subjects, limits and mode; :meth:`BridgeConfig.from_settings` when None.
        settings: Passed to the actors; each reads its environment when None.
        detached: Outlive the driver (``lifetime="detached"``).
        ready_timeout_s: How long to wait for them to serve.
        runtime_env: Ray runtime environment of the actors (e.g. ``env_vars``).

    Returns:
        The actor handles. Unless ``detached``, Ray ends the actors once no handle to them
        is left in any process, so keep these.

    Raises:
        UnavailableError: they did not all serve within ``ready_timeout_s``.
    """
    import ray

    config = config if config is not None else BridgeConfig.from_settings(settings)
    remote_class: Any = ray.remote(NATSBridge)
    actors: list[Any] = []
    for index in range(count):
        options: dict[str, Any] = {
            "name": actor_name(config, index),
            "namespace": config.namespace,
            "get_if_exists": True,
            "max_restarts": -1,
            "max_task_retries": -1,
            "num_cpus": config.num_cpus,
            "max_concurrency": 1000,
        }
        if detached:
            options["lifetime"] = "detached"
        if runtime_env is not None:
            options["runtime_env"] = runtime_env
        actors.append(remote_class.options(**options).remote(config, settings))
    ready = ray.get([a.ready.remote(ready_timeout_s) for a in actors])
    if not all(ready):
        raise UnavailableError(f"{ready.count(False)} of {count} NATS bridges did not start")
    return actors


def stop_bridges(
    config: BridgeConfig | None = None, *, count: int | None = None, timeout_s: float = 60.0
) -> int:
    """Stop the bridge actors of ``config`` (each finishes its requests first), then kill them.

    Args:
        config: Names the actors; the defaults when None.
        count: How many to look for; all ``nats-bridge-<i>`` found from 0 up when None.
        timeout_s: How long each may take to finish.

    Returns:
        How many were stopped.
    """
    import ray

    config = config if config is not None else BridgeConfig()
    stopped = 0
    index = 0
    while count is None or index < count:
        try:
            actor = ray.get_actor(actor_name(config, index), namespace=config.namespace)
        except ValueError:
            if count is None:
                break
            index += 1
            continue
        with contextlib.suppress(Exception):
            ray.get(actor.stop.remote(), timeout=timeout_s)
        ray.kill(actor, no_restart=True)
        stopped += 1
        index += 1
    return stopped
