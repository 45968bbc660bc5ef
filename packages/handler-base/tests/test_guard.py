"""The request guard of every platform app: API keys, admission, body sizes.

Real FastAPI apps made by ``platform_app``, driven in-process through httpx's ASGI
transport; routes count their calls, so "no work done" is checked, not assumed.
"""

import asyncio
import logging
import pickle
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, SecretStr

from handler_base.deployment import HandlerArgs
from handler_base.http import (
    AdmissionLimits,
    RequestGuard,
    configure_guard,
    guard_of,
    platform_app,
    sse_event,
    sse_response,
)
from handler_base.settings import Settings

KEYS = ("first-key-4d1f", "second-key-9a7c")


class Note(BaseModel):
    text: str


class App:
    """A platform app whose routes count their calls and can be held open."""

    def __init__(self, **platform: Any) -> None:
        # A name of its own: guards are found by app name within a process.
        self.api: FastAPI = platform_app(f"guard-test-{uuid.uuid4().hex}", **platform)
        self.calls = 0
        self.release = asyncio.Event()
        self.entered = 0
        api = self.api

        @api.post("/notes")
        async def notes(body: Note) -> dict[str, int]:
            self.calls += 1
            return {"length": len(body.text)}

        @api.post("/big")
        async def big(body: Note) -> dict[str, int]:
            self.calls += 1
            return {"length": len(body.text)}

        @api.get("/hold")
        async def hold() -> dict[str, int]:
            self.calls += 1
            self.entered += 1
            order = self.entered
            await self.release.wait()
            return {"order": order}

        @api.get("/stream")
        async def stream() -> Any:
            self.calls += 1

            async def events() -> AsyncIterator[str]:
                yield sse_event({"n": 1}, event="text")
                self.entered += 1
                await self.release.wait()
                yield sse_event({"n": 2}, event="done")

            return sse_response(events())

        @api.get("/static/app.js")
        async def static() -> dict[str, str]:
            return {"file": "app.js"}

    def configure(self, *, keys: tuple[str, ...] = (), **admission: Any) -> RequestGuard:
        settings = Settings(api_keys=SecretStr(",".join(keys))) if keys else Settings()
        limits = AdmissionLimits(**admission) if admission else None
        return configure_guard(self.api, limits, settings)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.api), base_url="http://guarded"
        )


async def wait_until(condition: Any) -> None:
    """Yield to the event loop until ``condition()`` holds (no clock involved)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]


# --- access ---------------------------------------------------------------------------


async def test_without_keys_every_route_is_open() -> None:
    app = App()
    app.configure()
    async with app.client() as client:
        assert (await client.post("/notes", json={"text": "hi"})).json() == {"length": 2}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-key"},
        {"X-API-Key": "not-a-key"},
        {"Authorization": f"Basic {KEYS[0]}"},
        {"Authorization": f"Bearer {KEYS[0]}x"},
        {"Authorization": "Bearer "},
    ],
    ids=["none", "wrong-bearer", "wrong-x-api-key", "other-scheme", "longer", "empty"],
)
async def test_no_key_or_a_wrong_one_is_unauthorized_and_no_route_runs(
    headers: dict[str, str],
) -> None:
    app = App()
    app.configure(keys=KEYS)
    async with app.client() as client:
        response = await client.post("/notes", json={"text": "hi"}, headers=headers)
        missing = await client.get("/nowhere", headers=headers)
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    # Unknown routes are refused the same way: nothing about the app leaks without a key.
    assert_error(missing, 401, "unauthorized")
    assert app.calls == 0
    for key in KEYS:
        assert key not in response.text


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {KEYS[0]}"},
        {"Authorization": f"bearer {KEYS[1]}"},
        {"X-API-Key": KEYS[1]},
        {"X-API-Key": "wrong", "Authorization": f"Bearer {KEYS[0]}"},
    ],
    ids=["bearer-first", "bearer-second-lower-case", "x-api-key", "one-of-two-headers"],
)
async def test_an_accepted_key_in_either_header_is_served(headers: dict[str, str]) -> None:
    app = App()
    app.configure(keys=KEYS)
    async with app.client() as client:
        response = await client.post("/notes", json={"text": "hey"}, headers=headers)
    assert response.json() == {"length": 3}
    assert app.calls == 1


async def test_health_and_declared_public_paths_need_no_key() -> None:
    app = App(public_paths=("/static/*",))
    app.configure(keys=KEYS)
    async with app.client() as client:
        assert (await client.get("/-/healthz")).status_code == 200
        assert (await client.get("/static/app.js")).json() == {"file": "app.js"}
        assert_error(await client.get("/hold"), 401, "unauthorized")
    assert app.calls == 0


async def test_keys_come_from_api_keys_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("API_KEYS", f" {KEYS[0]} ,,{KEYS[1]}")
    app = App()
    configure_guard(app.api)
    async with app.client() as client:
        assert_error(await client.post("/notes", json={"text": "a"}), 401, "unauthorized")
        served = await client.post("/notes", json={"text": "a"}, headers={"X-API-Key": KEYS[1]})
    assert served.status_code == 200


async def test_the_key_is_in_no_response_and_no_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    app = App()
    guard = app.configure(keys=KEYS)
    async with app.client() as client:
        texts = [
            (await client.post("/notes", json={"text": "a"}, headers=h)).text
            for h in (
                {"Authorization": f"Bearer {KEYS[0]}"},
                {"Authorization": f"Bearer {KEYS[0][:-1]}"},
                {"X-API-Key": KEYS[1] + "0"},
            )
        ]
    texts += [repr(guard), caplog.text, repr(Settings(api_keys=SecretStr(KEYS[0])))]
    assert caplog.records, "configure_guard logs what it set up"
    for key in KEYS:
        for text in texts:
            assert key not in text
            assert key[:-1] not in text


def test_a_pickled_app_shares_its_guard_as_serve_ingress_copies_it() -> None:
    """``serve.ingress`` serves a pickled copy: configuring the original reaches it."""
    # What serve.ingress does to the app it is given (ray/serve/api.py).
    from ray import cloudpickle
    from ray._common.serialization import pickle_dumps
    from ray.serve._private.utils import ensure_serialization_context

    app = App()
    ensure_serialization_context()
    copy = cloudpickle.loads(pickle_dumps(app.api, error_msg="cannot pickle the app"))
    assert copy is not app.api
    assert guard_of(copy) is guard_of(app.api)
    assert pickle.loads(pickle.dumps(guard_of(app.api))) is guard_of(app.api)
    app.configure(keys=KEYS)
    assert guard_of(copy).needs_key


# --- admission ------------------------------------------------------------------------


async def test_past_working_and_waiting_requests_are_shed_then_the_app_recovers() -> None:
    app = App()
    guard = app.configure(max_working=1, max_waiting=1, retry_after_s=2.5)
    async with app.client() as client:
        first = asyncio.create_task(client.get("/hold"))
        await wait_until(lambda: guard.working == 1)
        second = asyncio.create_task(client.get("/hold"))
        await wait_until(lambda: guard.waiting == 1)
        shed = await asyncio.gather(*(client.get("/hold") for _ in range(4)))
        assert app.calls == 1  # the waiting one has not started
        app.release.set()
        admitted = await asyncio.gather(first, second)
        assert [r.json() for r in admitted] == [{"order": 1}, {"order": 2}]
        for response in shed:
            assert_error(response, 503, "unavailable")
            assert response.headers["retry-after"] == "3"
        assert app.calls == 2
        assert (guard.working, guard.waiting) == (0, 0)
        assert (await client.get("/hold")).json() == {"order": 3}


async def test_health_is_answered_at_capacity() -> None:
    app = App()
    guard = app.configure(max_working=1, max_waiting=0)
    async with app.client() as client:
        held = asyncio.create_task(client.get("/hold"))
        await wait_until(lambda: guard.working == 1)
        assert (await client.get("/-/healthz")).status_code == 200
        assert_error(await client.get("/hold"), 503, "unavailable")
        app.release.set()
        assert (await held).status_code == 200


async def test_a_stream_holds_its_slot_until_its_last_event() -> None:
    app = App()
    guard = app.configure(max_working=1, max_waiting=0)
    async with app.client() as client:
        stream = asyncio.create_task(client.get("/stream"))
        await wait_until(lambda: app.entered == 1)  # the first event is out
        assert_error(await client.post("/notes", json={"text": "a"}), 503, "unavailable")
        app.release.set()
        body = (await stream).text
        assert body.count("data:") == 2
        assert guard.working == 0
        assert (await client.post("/notes", json={"text": "a"})).status_code == 200


async def test_unbounded_waiting_sheds_nothing() -> None:
    app = App()
    guard = app.configure(max_working=1, max_waiting=None)
    async with app.client() as client:
        tasks = [asyncio.create_task(client.get("/hold")) for _ in range(6)]
        await wait_until(lambda: guard.waiting == 5)
        app.release.set()
        orders = sorted(r.json()["order"] for r in await asyncio.gather(*tasks))
    assert orders == [1, 2, 3, 4, 5, 6]


async def test_unauthorized_requests_take_no_slot() -> None:
    app = App()
    guard = app.configure(keys=KEYS, max_working=1, max_waiting=0)
    async with app.client() as client:
        refused = await asyncio.gather(*(client.get("/hold") for _ in range(5)))
        assert {r.status_code for r in refused} == {401}
        assert guard.working == 0
        app.release.set()
        assert (await client.get("/hold", headers={"X-API-Key": KEYS[0]})).status_code == 200


async def test_a_waiter_that_leaves_passes_its_place_on() -> None:
    from handler_base.http import _Admission

    gate = _Admission(AdmissionLimits(max_working=1, max_waiting=2))
    assert await gate.enter()
    leaving = asyncio.create_task(gate.enter())
    staying = asyncio.create_task(gate.enter())
    await wait_until(lambda: gate.waiting == 2)
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert gate.waiting == 1
    gate.leave()
    assert await staying
    assert (gate.working, gate.waiting) == (1, 0)
    gate.leave()
    assert gate.working == 0


def test_handler_args_give_serve_room_for_the_guard_queue() -> None:
    args = HandlerArgs(max_ongoing_requests=3, max_queued_requests=5, retry_after_s=2)
    options = args.deployment_options()
    # The guard queues and sheds, not Serve: room for 8, for 8 shed at once, and a
    # router queue as deep for a burst being assigned.
    assert options["max_ongoing_requests"] == 16
    assert options["max_queued_requests"] == 16
    assert args.admission() == AdmissionLimits(max_working=3, max_waiting=5, retry_after_s=2)


# --- sizes ----------------------------------------------------------------------------


async def test_a_declared_length_over_the_limit_is_too_large_before_the_route() -> None:
    app = App(max_body_bytes=100, route_body_bytes={"/big": 1000})
    app.configure()
    async with app.client() as client:
        over = await client.post("/notes", json={"text": "x" * 100})
        assert_error(over, 413, "too_large")
        assert app.calls == 0
        # Another route has its own limit.
        assert (await client.post("/big", json={"text": "x" * 500})).status_code == 200
        assert_error(await client.post("/big", json={"text": "x" * 1000}), 413, "too_large")
        # A body of exactly the limit passes; the service answers on.
        exact = b'{"text": "' + b"x" * 88 + b'"}'
        assert len(exact) == 100
        headers = {"Content-Type": "application/json"}
        assert (await client.post("/notes", content=exact, headers=headers)).status_code == 200
    assert app.calls == 2


async def test_a_chunked_body_is_refused_once_it_passes_the_limit() -> None:
    app = App(max_body_bytes=100)
    app.configure()
    sent: list[int] = []

    async def chunks(total: int) -> AsyncIterator[bytes]:
        body = ('{"text": "' + "x" * (total - 12) + '"}').encode()
        for start in range(0, len(body), 40):
            sent.append(start)
            yield body[start : start + 40]

    async with app.client() as client:
        over = await client.post(
            "/notes", content=chunks(400), headers={"Content-Type": "application/json"}
        )
        assert_error(over, 413, "too_large")
        assert app.calls == 0
        under = await client.post(
            "/notes", content=chunks(90), headers={"Content-Type": "application/json"}
        )
        assert under.json() == {"length": 78}


async def test_too_large_comes_before_admission_and_unauthorized_before_both() -> None:
    app = App(max_body_bytes=10)
    guard = app.configure(keys=KEYS, max_working=1, max_waiting=0)
    async with app.client() as client:
        held = asyncio.create_task(client.get("/hold", headers={"X-API-Key": KEYS[0]}))
        await wait_until(lambda: guard.working == 1)
        body = {"text": "x" * 20}
        assert_error(await client.post("/notes", json=body), 401, "unauthorized")
        keyed = {"X-API-Key": KEYS[0]}
        assert_error(await client.post("/notes", json=body, headers=keyed), 413, "too_large")
        app.release.set()
        await held
