"""Soak under faults: a bounded load of chat and voice requests while parts of the stack die.

Used by ``bench/soak.py`` (the full run, with memory) and ``tests/test_soak.py`` (a short
one in CI). The load goes over HTTP (the Serve proxy) and over NATS in at-least-once mode
(the JetStream stream that captures the subjects, the bridge's durable consumer); the
stack itself is deployed by the caller (see :mod:`handler_base.testing.platform`).

What each request ends as:

* **answered**: a success reply (ChatResponse or VoiceResponse) for this request id.
* **clear error**: an error in the platform's shape with its code (HTTP status and
  ``{"error": {"code", "message"}}`` body, or a NATS error reply), before the deadline.
* **proxy 5xx**: HTTP only, a 5xx answer that is not the platform's shape: Serve's proxy
  when the handler replica serving the request died, where the proxy runs without
  :mod:`handler_base.proxy_errors` (a cluster whose images lack handler-base). With it, as
  on a local stack, that answer is a clear error (``internal``).
* **not accepted**: NATS only, the JetStream stream never confirmed storing the request
  before its deadline (the server was down); the requester knows it was not taken.
* **lost**: accepted (HTTP: sent; NATS: the stream confirmed it) but neither a reply nor a
  clear error by its deadline, or a reply that belongs to another request.
* **duplicated**: more than one reply to one request. A NATS request's reply subject is
  listened on until the whole run and a grace period after it are over; an HTTP request
  has one response by construction.

Faults are spaced out in time across the run; each is logged with when it happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from pydantic import BaseModel, ValidationError

from handler_base.errors import ErrorReply, PlatformError
from handler_base.messages import ChatRequest, ChatResponse, VoiceRequest, VoiceResponse
from handler_base.messaging import (
    REPLY_TO_HEADER,
    REQUEST_ID_HEADER,
    TIMEOUT_HEADER,
    connect,
    decode_reply,
    encode_model,
    flush,
)
from handler_base.messaging.jetstream import MSG_ID_HEADER
from handler_base.settings import Settings

logger = logging.getLogger(__name__)

Kind = Literal["chat", "chat_llm", "voice"]
"""``chat``: a collection that does not exist (answered without the LLM); ``chat_llm``:
RAG and the LLM; ``voice``: Whisper, RAG, the LLM and TTS."""
Transport = Literal["http", "nats"]
Status = Literal["answered", "error", "proxy_error", "not_accepted", "lost"]

KINDS: tuple[Kind, ...] = ("chat", "chat_llm", "voice")
TRANSPORTS: tuple[Transport, ...] = ("http", "nats")
CHAT_SUBJECT = "ai.chat.request"
VOICE_SUBJECT = "voice.request"
EMPTY_COLLECTION = "soak_nothing_here"

# The soak's knowledge base and question: the LLM requests are asked this.
SOAK_COLLECTION = "products"
SOAK_QUESTION = "How much does the ZX-41 flux capacitor cost?"
SOAK_DOCUMENTS = [
    {"id": "zx41", "text": "The ZX-41 flux capacitor ships in teal and costs 417 euros."},
    {"id": "hours", "text": "The support desk opens at 9 in the morning and closes at 5."},
]
PUBLISH_TIMEOUT_S = 5.0
"""Longest wait for the stream to confirm one publish before it is tried again."""


@dataclass(frozen=True)
class Workload:
    """What the requests ask and how long each may take.

    Attributes:
        question: The question of ``chat_llm`` requests (and what ``voice_wav`` says).
        collection: A collection that holds the answer.
        voice_wav: The spoken question, a WAV file.
        deadlines_s: Each kind's deadline, counted from when the client starts it.
        llm_every: Every n-th request is a ``chat_llm`` one.
        voice_every: Every n-th request is a ``voice`` one (0: none).
    """

    question: str
    collection: str
    voice_wav: bytes
    deadlines_s: dict[Kind, float] = field(
        default_factory=lambda: {"chat": 120.0, "chat_llm": 300.0, "voice": 300.0}
    )
    llm_every: int = 20
    voice_every: int = 40

    def plan(self, index: int) -> tuple[Transport, Kind]:
        """How request number ``index`` goes, and what it asks.

        The transports alternate, and each kind goes over both.
        """
        return TRANSPORTS[index % len(TRANSPORTS)], self.kind_of(index // len(TRANSPORTS))

    def kind_of(self, index: int) -> Kind:
        """The kind of the ``index``-th pair of requests."""
        if self.voice_every and index % self.voice_every == self.voice_every // 2:
            return "voice"
        if self.llm_every and index % self.llm_every == 0:
            return "chat_llm"
        return "chat"


@dataclass
class Outcome:
    """What became of one request."""

    index: int
    transport: Transport
    kind: Kind
    request_id: str
    status: Status
    latency_s: float
    code: str | None = None
    detail: str = ""
    replies: int = 1
    """Replies received for it (NATS: counted until the end of the run plus a grace)."""


@dataclass
class Fault:
    """One fault: at ``at_s`` seconds into the run, ``action`` runs (in a worker thread).

    Attributes:
        name: What it is, for the log and the table.
        at_s: When, in seconds from the start of the run.
        action: Does it; returns what it did.
        hit: Wait (up to ``hit_wait_s`` more) until a request of one of these
            ``"transport kind"`` pairs (``"nats voice"``) has been in flight for
            ``hit_after_s``, so that the fault hits work under way.
        in_flight: The requests in flight when it happened, by transport and kind.
    """

    name: str
    at_s: float
    action: Callable[[], str]
    hit: tuple[str, ...] = ()
    hit_after_s: float = 1.0
    hit_wait_s: float = 30.0
    happened_at_s: float | None = None
    result: str = ""
    in_flight: dict[str, int] = field(default_factory=dict)


@dataclass
class SoakResult:
    """The outcomes of a run and the faults it went through."""

    outcomes: list[Outcome]
    faults: list[Fault]
    wall_s: float

    def rows(self) -> list[dict[str, Any]]:
        """One summary per transport and kind (and one for all): counts, p50, p99."""
        groups: dict[tuple[str, str], list[Outcome]] = defaultdict(list)
        for o in self.outcomes:
            groups[(o.transport, o.kind)].append(o)
            groups[("all", "all")].append(o)
        order = [(t, k) for t in TRANSPORTS for k in KINDS] + [("all", "all")]
        return [summary(t, k, groups[(t, k)]) for t, k in order if groups.get((t, k))]

    def totals(self) -> dict[str, Any]:
        """The summary of all requests together."""
        return next(r for r in self.rows() if r["transport"] == "all")

    def describe(self) -> str:
        """The summaries and the faults as lines of text, for logs and test output."""
        lines = [
            f"{r['transport']} {r['kind']}: {r['requests']} requests, {r['answered']} answered, "
            f"{r['clear_errors']} clear errors {r['error_codes']}, {r['proxy_5xx']} proxy 5xx, "
            f"{r['not_accepted']} not accepted, {r['lost']} lost, {r['duplicated']} duplicated, "
            f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms"
            for r in self.rows()
        ]
        lines += [
            f"fault {f.name} at {f.happened_at_s} s, in flight {f.in_flight}: {f.result}"
            for f in self.faults
        ]
        return "\n".join(lines)

    def failures(self) -> list[Outcome]:
        """The requests that were lost or answered more than once."""
        return [o for o in self.outcomes if o.status == "lost" or o.replies > 1]


def summary(transport: str, kind: str, outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Counts by status, duplicates, error codes, and p50/p99 of the answered ones."""
    statuses = Counter(o.status for o in outcomes)
    answered = sorted(o.latency_s for o in outcomes if o.status == "answered")
    return {
        "transport": transport,
        "kind": kind,
        "requests": len(outcomes),
        "answered": statuses["answered"],
        "clear_errors": statuses["error"],
        "proxy_5xx": statuses["proxy_error"],
        "not_accepted": statuses["not_accepted"],
        "lost": statuses["lost"],
        "duplicated": sum(1 for o in outcomes if o.replies > 1),
        "error_codes": dict(Counter(o.code for o in outcomes if o.code)),
        "p50_ms": _percentile_ms(answered, 50),
        "p99_ms": _percentile_ms(answered, 99),
    }


def _percentile_ms(ordered: Sequence[float], q: float) -> float | None:
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return round(ordered[index] * 1000, 1)


class SoakClient:
    """Sends the soak's requests over HTTP and over NATS (at-least-once) and classifies them.

    Args:
        http_url: The Serve proxy's base URL.
        settings: NATS connection settings.
        workload: What to ask.
    """

    def __init__(self, http_url: str, settings: Settings, workload: Workload) -> None:
        self.http_url = http_url.rstrip("/")
        self.settings = settings
        self.workload = workload
        self.run_id = uuid.uuid4().hex[:8]
        self._http: httpx.AsyncClient | None = None
        self._nc: NATS | None = None
        self._replies: Counter[str] = Counter()
        self._waiting: dict[str, asyncio.Future[Msg]] = {}

    async def __aenter__(self) -> SoakClient:
        self._http = httpx.AsyncClient(limits=httpx.Limits(max_connections=100))
        self._nc = await connect(self.settings, connect_wait_s=30.0)
        await self._nc.subscribe(f"{self._reply_prefix}.*", cb=self._on_reply)
        await flush(self._nc)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.aclose()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()

    @property
    def _reply_prefix(self) -> str:
        return f"soak.replies.{self.run_id}"

    async def _on_reply(self, msg: Msg) -> None:
        request_id = msg.subject.rsplit(".", 1)[-1]
        self._replies[request_id] += 1
        waiter = self._waiting.get(request_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(msg)

    def replies_to(self, request_id: str) -> int:
        """How many replies came to a NATS request's reply subject so far."""
        return self._replies[request_id]

    def payload(self, kind: Kind, request_id: str) -> ChatRequest | VoiceRequest:
        """The request message of ``kind``."""
        w = self.workload
        if kind == "voice":
            return VoiceRequest(
                audio=w.voice_wav, collection=w.collection, top_n=2, request_id=request_id
            )
        if kind == "chat_llm":
            return ChatRequest(
                query=w.question, collection=w.collection, top_n=2, request_id=request_id
            )
        return ChatRequest(
            query=f"Soak question {request_id}?", collection=EMPTY_COLLECTION, request_id=request_id
        )

    async def send(self, index: int, transport: Transport, kind: Kind) -> Outcome:
        """Send one request and wait for what becomes of it (up to its deadline)."""
        request_id = f"soak-{self.run_id}-{index}"
        deadline_s = self.workload.deadlines_s[kind]
        started = time.monotonic()
        if transport == "http":
            status, code, detail = await self._send_http(kind, request_id, deadline_s)
        else:
            status, code, detail = await self._send_nats(kind, request_id, deadline_s)
        outcome = Outcome(
            index, transport, kind, request_id, status, time.monotonic() - started, code, detail
        )
        if status not in ("answered", "error"):
            logger.warning("soak request %s (%s %s): %s %s", index, transport, kind, status, detail)
        return outcome

    async def _send_http(
        self, kind: Kind, request_id: str, deadline_s: float
    ) -> tuple[Status, str | None, str]:
        assert self._http is not None
        payload = self.payload(kind, request_id)
        try:
            if isinstance(payload, VoiceRequest):
                response = await self._http.post(
                    f"{self.http_url}/voice",
                    content=self.workload.voice_wav,
                    params={"collection": payload.collection, "top_n": 2, "request_id": request_id},
                    headers={"Content-Type": "audio/wav"},
                    timeout=deadline_s,
                )
            else:
                response = await self._http.post(
                    f"{self.http_url}/chat",
                    json=payload.model_dump(mode="json", exclude_unset=True),
                    timeout=deadline_s,
                )
        except httpx.ConnectError as exc:
            return "not_accepted", None, f"no connection to the proxy: {exc!r}"
        except httpx.HTTPError as exc:
            return "lost", None, f"{type(exc).__name__}: {exc}"
        reply_type: type[BaseModel] = VoiceResponse if kind == "voice" else ChatResponse
        if response.status_code == 200 or _is_error_shape(response.content):
            return classify_reply(response.content, None, reply_type, request_id)
        detail = f"HTTP {response.status_code}: {response.text[:200]!r}"
        if response.status_code >= 500:
            return "proxy_error", str(response.status_code), detail
        return "lost", None, detail

    async def _send_nats(
        self, kind: Kind, request_id: str, deadline_s: float
    ) -> tuple[Status, str | None, str]:
        """Publish into the stream until it confirms (same Nats-Msg-Id), then await the reply."""
        assert self._nc is not None
        payload = self.payload(kind, request_id)
        subject = VOICE_SUBJECT if kind == "voice" else CHAT_SUBJECT
        reply_type: type[BaseModel] = VoiceResponse if kind == "voice" else ChatResponse
        headers = {
            REPLY_TO_HEADER: f"{self._reply_prefix}.{request_id}",
            REQUEST_ID_HEADER: request_id,
            TIMEOUT_HEADER: f"{deadline_s:g}",
            # A publish tried again after a lost confirmation is stored once.
            MSG_ID_HEADER: request_id,
        }
        data = encode_model(payload)
        waiter: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = waiter
        end = time.monotonic() + deadline_s
        try:
            accepted = False
            last_error = ""
            while not accepted and time.monotonic() < end:
                try:
                    await self._nc.jetstream().publish(
                        subject,
                        data,
                        headers=headers,
                        timeout=max(0.001, min(PUBLISH_TIMEOUT_S, end - time.monotonic())),
                    )
                    accepted = True
                except (nats.errors.Error, OSError) as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
                    await asyncio.sleep(min(0.5, max(0.0, end - time.monotonic())))
            try:
                msg = await asyncio.wait_for(
                    asyncio.shield(waiter), max(0.001, end - time.monotonic())
                )
            except TimeoutError:
                if not accepted:
                    return "not_accepted", None, f"the stream never confirmed it: {last_error}"
                return "lost", None, f"no reply within {deadline_s:g} s"
        finally:
            self._waiting.pop(request_id, None)
        return classify_reply(msg.data, msg.headers, reply_type, request_id)


def classify_reply(
    data: bytes, headers: dict[str, str] | None, reply_type: type[BaseModel], request_id: str
) -> tuple[Status, str | None, str]:
    """Answered (for this request), a clear error, or neither (counted lost)."""
    try:
        reply = decode_reply(data, headers, reply_type)
    except PlatformError as error:
        if not _is_error_shape(data):
            return "lost", None, f"neither a reply nor an error: {data[:200]!r}"
        return "error", error.code.value, error.message[:200]
    if getattr(reply, "request_id", None) != request_id:
        return "lost", None, f"a reply for {getattr(reply, 'request_id', None)!r} came instead"
    return "answered", None, ""


def _is_error_shape(data: bytes) -> bool:
    try:
        ErrorReply.model_validate_json(data)
    except ValidationError:
        return False
    return True


async def run_soak(
    client: SoakClient,
    requests: int,
    clients: int,
    *,
    faults: Sequence[Fault] = (),
    duration_s: float | None = None,
    grace_s: float = 10.0,
    first_index: int = 0,
) -> SoakResult:
    """Send ``requests`` requests from ``clients`` concurrent clients; run the faults on time.

    Request ``i`` goes and asks as ``client.workload.plan(i)`` says.

    Args:
        client: The requester.
        requests: How many requests in all.
        clients: How many are in flight at most.
        faults: Run each at its ``at_s`` (seconds from the start), in a worker thread.
        duration_s: Spread the starts of the requests evenly over this many seconds (a
            bounded load that lasts across the faults); as fast as the clients go when None.
        grace_s: After the last request ends, how long NATS reply subjects are still
            listened on for duplicates.
        first_index: The index of the first request (request ids stay unique per client).
    """
    started = time.monotonic()
    next_index = first_index
    outcomes: list[Outcome] = []
    in_flight: dict[int, tuple[Transport, Kind, float]] = {}

    async def one_client() -> None:
        nonlocal next_index
        while next_index < first_index + requests:
            index = next_index
            next_index += 1
            if duration_s is not None:
                start_at = started + duration_s * (index - first_index) / requests
                await asyncio.sleep(max(0.0, start_at - time.monotonic()))
            transport, kind = client.workload.plan(index)
            in_flight[index] = (transport, kind, time.monotonic())
            try:
                outcomes.append(await client.send(index, transport, kind))
            finally:
                del in_flight[index]

    def hits(fault: Fault) -> bool:
        since = time.monotonic() - fault.hit_after_s
        return any(f"{t} {k}" in fault.hit and t0 <= since for t, k, t0 in in_flight.values())

    async def run_fault(fault: Fault) -> None:
        await asyncio.sleep(max(0.0, fault.at_s - (time.monotonic() - started)))
        give_up = time.monotonic() + fault.hit_wait_s
        while fault.hit and not hits(fault) and time.monotonic() < give_up:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        fault.happened_at_s = round(time.monotonic() - started, 1)
        fault.in_flight = dict(Counter(f"{t} {k}" for t, k, _ in in_flight.values()))
        logger.warning("soak fault at %.1f s: %s", fault.happened_at_s, fault.name)
        try:
            fault.result = await asyncio.to_thread(fault.action)
        except Exception as exc:
            fault.result = f"failed: {exc!r}"
            raise
        logger.warning("soak fault %s: %s", fault.name, fault.result)

    fault_tasks = [asyncio.create_task(run_fault(f)) for f in faults]
    await asyncio.gather(*(one_client() for _ in range(clients)))
    await asyncio.gather(*fault_tasks)
    await asyncio.sleep(grace_s)
    for o in outcomes:
        if o.transport == "nats":
            o.replies = client.replies_to(o.request_id)
    outcomes.sort(key=lambda o: o.index)
    return SoakResult(outcomes, list(faults), round(time.monotonic() - started, 1))


# --- faults ---------------------------------------------------------------------------


def replica_actors(app: str, deployment: str | None = None) -> list[dict[str, Any]]:
    """The live Serve replica actors of ``app`` (and ``deployment``): Ray's actor records."""
    from ray._private import state

    prefix = f"SERVE_REPLICA::{app}#" + (f"{deployment}#" if deployment else "")
    return [
        a
        for a in state.actors().values()
        if a["State"] == "ALIVE" and str(a["Name"]).startswith(prefix)
    ]


def kill_replica(app: str, deployment: str | None = None) -> str:
    """Kill one live replica of ``app`` for good; Serve's controller starts a new one."""
    import ray

    replicas = replica_actors(app, deployment)
    if not replicas:
        raise RuntimeError(f"no live replica of {app}")
    victim = replicas[0]
    ray.kill(ray.get_actor(victim["Name"], namespace="serve"), no_restart=True)
    return f"killed {victim['Name']} (pid {victim['Pid']})"


def kill_actor(actor: Any, label: str) -> str:
    """Kill a restartable actor; Ray restarts it."""
    import ray

    ray.kill(actor, no_restart=False)
    return f"killed {label}; Ray restarts it"


def fault_schedule(every_s: float, bridge: Any, nats_server: Any) -> list[Fault]:
    """The soak's four faults, ``every_s`` apart, each when it hits work under way.

    (a) an embeddings replica killed while a cheap chat is in flight (it is mostly in the
    embedding); (b) the chat replica killed while an LLM or voice request is in it;
    (c) the bridge actor killed, and (d) the nats-server restarted, while a NATS request
    that takes seconds is in flight.

    Args:
        every_s: Seconds between two faults (the first comes after ``every_s``).
        bridge: The bridge actor's handle (Ray restarts it).
        nats_server: The :class:`~handler_base.messaging.server.NatsServer` to restart.
    """
    slow_nats = ("nats chat_llm", "nats voice")
    return [
        Fault(
            "(a) embeddings replica killed",
            every_s,
            lambda: kill_replica("embeddings"),
            hit=("http chat", "nats chat"),
            hit_after_s=0.0,
        ),
        Fault(
            "(b) chat replica killed",
            2 * every_s,
            lambda: kill_replica("chat"),
            hit=("http chat_llm", "nats chat_llm", "http voice", "nats voice"),
            hit_after_s=3.0,
        ),
        Fault(
            "(c) bridge actor killed",
            3 * every_s,
            lambda: kill_actor(bridge, "the bridge actor"),
            hit=slow_nats,
            hit_after_s=2.0,
        ),
        Fault(
            "(d) nats-server restarted",
            4 * every_s,
            lambda: f"restarted {nats_server.restart()!r}",
            hit=slow_nats,
            hit_after_s=2.0,
        ),
    ]


# --- memory ---------------------------------------------------------------------------


def stack_processes(extra: dict[str, int] | None = None) -> dict[str, int]:
    """Process ids of the stack on this Ray, by a label; plus ``extra``.

    Every Serve replica, the Serve controller and proxy, the other named actors, and the
    raylet and GCS that this driver started.
    """
    import psutil
    from ray._private import state

    found: dict[str, int] = {}
    for actor in state.actors().values():
        name = str(actor["Name"])
        if actor["State"] != "ALIVE" or not name or not actor["Pid"]:
            continue
        if name.startswith("SERVE_REPLICA::"):
            app, deployment, _ = name.removeprefix("SERVE_REPLICA::").split("#", 2)
            label = f"replica {app}/{deployment}"
        elif name.startswith("SERVE_PROXY_ACTOR"):
            label = "serve proxy"
        elif name == "SERVE_CONTROLLER_ACTOR":
            label = "serve controller"
        else:
            label = f"actor {name}"
        while label in found:
            label += "'"
        found[label] = int(actor["Pid"])
    for child in psutil.Process(os.getpid()).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.name() in ("raylet", "gcs_server"):
                found[child.name()] = child.pid
    found.update(extra or {})
    return found


def rss_mb(pids: dict[str, int]) -> dict[str, float | None]:
    """Resident memory of each process in MB (None for one that is gone)."""
    import psutil

    sizes: dict[str, float | None] = {}
    for label, pid in pids.items():
        try:
            sizes[label] = round(psutil.Process(pid).memory_info().rss / 1e6, 1)
        except psutil.Error:
            sizes[label] = None
    return sizes


def memory_growth(
    before: dict[str, float | None],
    after: dict[str, float | None],
    *,
    allowed_mb: float = 50.0,
    allowed_fraction: float = 0.10,
) -> list[dict[str, Any]]:
    """Per process: before, after, delta, and whether it stayed within its bound.

    The bound is ``allowed_mb`` plus ``allowed_fraction`` of the process's size before.
    """
    rows = []
    for label, was in before.items():
        now = after.get(label)
        if was is None or now is None:
            rows.append({"process": label, "before_mb": was, "after_mb": now, "ok": False})
            continue
        bound = allowed_mb + allowed_fraction * was
        delta = round(now - was, 1)
        rows.append(
            {
                "process": label,
                "before_mb": was,
                "after_mb": now,
                "delta_mb": delta,
                "bound_mb": round(bound, 1),
                "ok": delta <= bound,
            }
        )
    return rows


async def wait_until_answered(
    client: SoakClient, timeout_s: float, first_index: int
) -> list[Outcome]:
    """Send a cheap chat over each transport until both are answered; the last tries.

    Nothing is done to help the stack recover: this only waits and asks again.
    """
    end = time.monotonic() + timeout_s
    index = first_index
    last: list[Outcome] = []
    while time.monotonic() < end:
        last = [await client.send(index + i, t, "chat") for i, t in enumerate(TRANSPORTS)]
        index += len(TRANSPORTS)
        if all(o.status == "answered" for o in last):
            break
        await asyncio.sleep(2.0)
    return last


async def every_kind_answered(client: SoakClient, first_index: int) -> list[Outcome]:
    """One request of every kind over every transport, all at once."""
    pairs = [(t, k) for t in TRANSPORTS for k in KINDS]
    return list(
        await asyncio.gather(
            *(client.send(first_index + i, t, k) for i, (t, k) in enumerate(pairs))
        )
    )
