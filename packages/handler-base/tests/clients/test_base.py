"""ServiceClient against a real Serve app on a real local Ray cluster: handle and HTTP."""

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any, cast

import httpx
import pytest
import ray
from fastapi import Body, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from ray import serve

from handler_base import Settings
from handler_base.clients.base import ClientMode, ServerSentEvent, ServiceClient, _parse_sse
from handler_base.errors import (
    InternalError,
    InvalidRequestError,
    PlatformError,
    RequestTimeoutError,
    UnavailableError,
)
from handler_base.testing.ray_fixtures import LocalServe, free_port, pickle_by_value

pytestmark = pytest.mark.integration

pickle_by_value(sys.modules[__name__])

APP = "echo-test"
JsonBody = Annotated[dict[str, Any], Body()]
ROUTE_PREFIX = "/echo-test"

# --- the Serve app under test: the same operations as methods (handle) and routes (HTTP)

api = FastAPI()


@api.exception_handler(PlatformError)
async def _platform_error(request: Request, exc: PlatformError) -> JSONResponse:
    return JSONResponse(exc.to_reply().model_dump(mode="json"), status_code=exc.http_status)


@serve.deployment(name="EchoDeployment", ray_actor_options={"num_cpus": 0.1})
@serve.ingress(api)
class Echo:
    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    async def echo(self, payload: dict[str, Any]) -> dict[str, Any]:
        text = payload["text"]
        if payload.get("fail"):
            raise InvalidRequestError(f"cannot echo {text!r}")
        if payload.get("crash"):
            raise ValueError("the echo broke")
        await asyncio.sleep(payload.get("sleep", 0))
        return {"text": text, "length": len(text)}

    async def count(self, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        for i in range(payload["n"]):
            if i == payload.get("fail_at"):
                raise InvalidRequestError(f"cannot count to {i}")
            await asyncio.sleep(0)
            yield {"i": i}

    async def count_calls(self, key: str) -> int:
        return self.calls.get(key, 0)

    @api.post("/v1/echo")
    async def echo_route(self, body: JsonBody) -> dict[str, Any]:
        return await self.echo(body)

    @api.post("/v1/count")
    async def count_route(self, body: JsonBody) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            try:
                async for item in self.count(body):
                    yield f"data: {json.dumps(item)}\n\n"
            except PlatformError as exc:
                yield f"event: error\ndata: {exc.to_reply().model_dump_json()}\n\n"
                return
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @api.post("/v1/flaky/{key}")
    async def flaky_route(self, key: str, request: Request) -> Any:
        """503 on the first two calls of each key, then the echo."""
        self.calls[key] = self.calls.get(key, 0) + 1
        if self.calls[key] <= 2:
            headers = (
                {"Retry-After": request.query_params["retry_after"]}
                if ("retry_after" in request.query_params)
                else {}
            )
            return PlainTextResponse("busy", status_code=503, headers=headers)
        return await self.echo(await request.json())

    @api.post("/v1/bad/{key}")
    async def bad_route(self, key: str) -> PlainTextResponse:
        self.calls[key] = self.calls.get(key, 0) + 1
        return PlainTextResponse("no such thing as a bad echo", status_code=400)

    @api.get("/v1/headers")
    async def headers_route(self, request: Request) -> dict[str, str]:
        return dict(request.headers)


class EchoClient(ServiceClient):
    """A client as the concrete model clients will be: one typed method per operation."""

    service = "embeddings"  # any Settings service: tests pass base_url
    app_name = APP
    deployment_name = "EchoDeployment"
    retry_backoff_s = 0.05

    async def echo(
        self, text: str, *, fail: bool = False, crash: bool = False, sleep: float = 0
    ) -> Any:
        payload = {"text": text, "fail": fail, "crash": crash, "sleep": sleep}
        return await self._call("echo", payload, "/v1/echo")

    def count(self, n: int, fail_at: int | None = None) -> AsyncGenerator[Any, None]:
        return self._stream("count", {"n": n, "fail_at": fail_at}, "/v1/count")


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"http_retries": 3, "http_timeout_s": 30, "http_connect_timeout_s": 2}
    return Settings(**(values | overrides))


@pytest.fixture(scope="module")
def echo_url(serve_instance: LocalServe) -> Iterator[str]:
    serve.run(cast(Any, Echo).bind(), name=APP, route_prefix=ROUTE_PREFIX)
    yield f"{serve_instance.http_url}{ROUTE_PREFIX}"
    serve.delete(APP)


def _client(echo_url: str, mode: ClientMode, **settings: Any) -> EchoClient:
    return EchoClient(_settings(**settings), mode=mode, base_url=echo_url)


# --- both paths, same answers ---------------------------------------------------------


async def test_handle_and_http_give_the_same_result(echo_url: str) -> None:
    async with (
        _client(echo_url, "handle") as by_handle,
        _client(echo_url, "http") as by_http,
    ):
        assert await by_handle.path() == "handle"
        assert await by_http.path() == "http"
        from_handle = await by_handle.echo("héllo")
        from_http = await by_http.echo("héllo")
    assert from_handle == from_http == {"text": "héllo", "length": 5}


@pytest.mark.parametrize("mode", ["handle", "http"])
async def test_a_platform_error_arrives_typed_on_both_paths(
    echo_url: str, mode: ClientMode
) -> None:
    async with _client(echo_url, mode) as client:
        with pytest.raises(InvalidRequestError) as caught:
            await client.echo("nope", fail=True)
        assert caught.value.message == "cannot echo 'nope'"
        # the service keeps serving
        assert (await client.echo("yes"))["length"] == 3


@pytest.mark.parametrize("mode", ["handle", "http"])
async def test_an_unexpected_failure_is_internal_on_both_paths(
    echo_url: str, mode: ClientMode
) -> None:
    async with _client(echo_url, mode) as client:
        with pytest.raises(InternalError):
            await client.echo("x", crash=True)


@pytest.mark.parametrize("mode", ["handle", "http"])
async def test_a_slow_answer_is_a_timeout_on_both_paths(echo_url: str, mode: ClientMode) -> None:
    async with _client(echo_url, mode, http_timeout_s=0.5) as client:
        started = time.perf_counter()
        with pytest.raises(RequestTimeoutError):
            await client.echo("slow", sleep=5)
        assert time.perf_counter() - started < 3
        assert (await client.echo("quick"))["length"] == 5


async def test_streams_are_the_same_on_both_paths(echo_url: str) -> None:
    async with (
        _client(echo_url, "handle") as by_handle,
        _client(echo_url, "http") as by_http,
    ):
        from_handle = [item async for item in by_handle.count(5)]
        from_http = [item async for item in by_http.count(5)]
    assert from_handle == from_http == [{"i": i} for i in range(5)]


@pytest.mark.parametrize("mode", ["handle", "http"])
async def test_an_error_in_the_middle_of_a_stream_arrives_typed(
    echo_url: str, mode: ClientMode
) -> None:
    received: list[Any] = []

    async def consume(stream: AsyncIterator[Any]) -> None:
        async for item in stream:
            received.append(item)

    async with _client(echo_url, mode) as client:
        with pytest.raises(InvalidRequestError, match="cannot count to 2"):
            await consume(client.count(5, fail_at=2))
    assert received == [{"i": 0}, {"i": 1}]


@pytest.mark.parametrize("mode", ["handle", "http"])
async def test_leaving_a_stream_early_is_fine(echo_url: str, mode: ClientMode) -> None:
    async with _client(echo_url, mode) as client:
        stream = client.count(1000)
        async for item in stream:
            if item["i"] == 3:
                break
        await stream.aclose()
        assert await client.echo("after") == {"text": "after", "length": 5}


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Doomed:
    async def ping(self) -> str:
        return "pong"

    async def die(self) -> None:
        os._exit(1)


class DoomedClient(ServiceClient):
    service = "embeddings"
    app_name = "doomed-test"
    deployment_name = "Doomed"


async def test_a_dead_replica_is_unavailable_on_the_handle_path(
    serve_instance: LocalServe,
) -> None:
    serve.run(cast(Any, Doomed).bind(), name="doomed-test", route_prefix="/doomed-test")
    try:
        # A call whose replica dies is sent once more, to the replica Serve starts in its
        # place (seconds later): one that kills that one too is unavailable.
        async with DoomedClient(_settings(http_timeout_s=90), mode="handle") as client:
            assert await client._call("ping", None, "/") == "pong"
            with pytest.raises(UnavailableError):
                await client._call("die", None, "/")
    finally:
        serve.delete("doomed-test")


@serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0.05})
class Busy:
    async def work(self, note: str) -> int:
        """Write this replica's pid to ``note``, then take a while; the pid."""
        await asyncio.to_thread(Path(note).write_text, str(os.getpid()))
        await asyncio.sleep(3)
        return os.getpid()

    async def work_stream(self, note: str) -> AsyncGenerator[int, None]:
        yield await self.work(note)


class BusyClient(ServiceClient):
    service = "embeddings"
    app_name = "busy-test"
    deployment_name = "Busy"


def _kill_replica_with_pid(pid: int) -> None:
    from ray._private import state

    (name,) = [
        a["Name"]
        for a in state.actors().values()
        if a["State"] == "ALIVE" and a["Pid"] == pid and a["Name"].startswith("SERVE_REPLICA::")
    ]
    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_call_whose_replica_is_killed_is_answered_by_another(
    serve_instance: LocalServe, tmp_path: Any, stream: bool
) -> None:
    serve.run(cast(Any, Busy).bind(), name="busy-test", route_prefix="/busy-test")
    note = tmp_path / "pid"
    try:
        async with BusyClient(_settings(http_timeout_s=60), mode="handle") as client:
            assert await client.path() == "handle"
            if stream:  # a stream that dies before its first item starts again
                call = asyncio.ensure_future(
                    _first(client._handle_stream("work_stream", str(note)))
                )
            else:
                call = asyncio.ensure_future(client._handle_call("work", str(note)))
            while not note.exists() or not note.read_text():
                assert not call.done(), call.result()
                await asyncio.sleep(0.05)
            killed = int(note.read_text())
            await asyncio.to_thread(_kill_replica_with_pid, killed)
            answered_by = await call
            assert answered_by != killed
    finally:
        serve.delete("busy-test")


async def _first(items: AsyncIterator[Any]) -> Any:
    async for item in items:
        return item
    raise AssertionError("the stream was empty")


async def test_a_deleted_app_is_unavailable_on_the_handle_path(
    serve_instance: LocalServe,
) -> None:
    serve.run(cast(Any, Doomed).bind(), name="doomed-test", route_prefix="/doomed-test")
    async with DoomedClient(_settings(http_timeout_s=10), mode="handle") as client:
        try:
            assert await client._call("ping", None, "/") == "pong"
        finally:
            serve.delete("doomed-test")
        started = time.perf_counter()
        with pytest.raises(UnavailableError, match="doomed-test"):
            await client._call("ping", None, "/")
        assert time.perf_counter() - started < 5


# --- choosing the path ----------------------------------------------------------------


@ray.remote(num_cpus=0.1)
def _echo_from_a_ray_task(echo_url: str) -> tuple[str, Any]:
    async def run() -> tuple[str, Any]:
        async with EchoClient(_settings(), base_url=echo_url) as client:
            result = await client.echo("from a task")
            return await client.path(), result

    return asyncio.run(run())


async def test_auto_mode_uses_the_handle_inside_ray(echo_url: str) -> None:
    path, result = await _echo_from_a_ray_task.remote(echo_url)
    assert path == "handle"
    assert result == {"text": "from a task", "length": 11}


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Relay:
    """A deployment that calls another, as the handlers call the models."""

    async def relay(self, echo_url: str) -> tuple[str, Any]:
        async with EchoClient(_settings(), base_url=echo_url) as client:
            result = await client.echo("from a replica")
            return await client.path(), result


async def test_auto_mode_uses_the_handle_inside_a_serve_replica(echo_url: str) -> None:
    relay = serve.run(cast(Any, Relay).bind(), name="relay-test", route_prefix="/relay-test")
    try:
        path, result = await relay.relay.remote(echo_url)
    finally:
        serve.delete("relay-test")
    assert path == "handle"
    assert result == {"text": "from a replica", "length": 14}


async def test_auto_mode_in_the_driver_uses_the_handle_and_says_so_once(
    echo_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="handler_base.clients.base"):
        async with _client(echo_url, "auto") as client:
            for _ in range(3):
                await client.echo("again")
            assert await client.path() == "handle"
    said = [r.getMessage() for r in caplog.records if r.name == "handler_base.clients.base"]
    assert said == [
        f"EchoClient calls deployment 'EchoDeployment' of Serve app '{APP}' "
        "through a Ray DeploymentHandle"
    ]


async def test_auto_mode_uses_http_when_the_app_is_absent(echo_url: str) -> None:
    client = EchoClient(_settings(), base_url=echo_url, app_name="no-such-app")
    async with client:
        assert await client.echo("fallback") == {"text": "fallback", "length": 8}
        assert await client.path() == "http"


async def test_handle_mode_without_the_app_is_unavailable(echo_url: str) -> None:
    client = EchoClient(_settings(), mode="handle", base_url=echo_url, app_name="no-such-app")
    async with client:
        with pytest.raises(UnavailableError, match="no-such-app"):
            await client.echo("x")


async def test_auto_mode_uses_http_when_ray_is_not_initialized(echo_url: str) -> None:
    """In a plain Python process: HTTP, and Ray is neither started nor even imported."""
    script = f"""
import asyncio, sys
from handler_base import Settings
from handler_base.clients.base import ServiceClient

class EchoClient(ServiceClient):
    service = "embeddings"
    app_name = {APP!r}
    deployment_name = "EchoDeployment"

async def main():
    async with EchoClient(Settings(), base_url={echo_url!r}) as client:
        result = await client._call("echo", {{"text": "outside"}}, "/v1/echo")
        print(await client.path(), result["text"], "ray" in sys.modules)

asyncio.run(main())
"""
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["http", "outside", "False"]


# --- HTTP retries -----------------------------------------------------------------------


async def _calls(key: str) -> int:
    handle = serve.get_deployment_handle("EchoDeployment", app_name=APP)
    count: int = await handle.count_calls.remote(key)
    return count


async def test_http_retries_a_503_until_it_answers(echo_url: str) -> None:
    async with _client(echo_url, "http", http_retries=3) as client:
        result = await client._call("echo", {"text": "patience"}, "/v1/flaky/patient")
    assert result == {"text": "patience", "length": 8}
    assert await _calls("patient") == 3


async def test_http_gives_up_on_503_after_the_configured_retries(echo_url: str) -> None:
    async with _client(echo_url, "http", http_retries=1) as client:
        with pytest.raises(UnavailableError, match="busy"):
            await client._call("echo", {"text": "x"}, "/v1/flaky/impatient")
    assert await _calls("impatient") == 2


async def test_http_honours_retry_after_up_to_its_cap(echo_url: str) -> None:
    class Capped(EchoClient):
        retry_after_max_s = 0.3

    async with Capped(_settings(http_retries=3), mode="http", base_url=echo_url) as client:
        started = time.perf_counter()
        await client._call("echo", {"text": "x"}, "/v1/flaky/later?retry_after=120")
        waited = time.perf_counter() - started
    assert 0.6 <= waited < 3  # two waits of 0.3 s (the cap), not 120 s, nor the 0.05 s back-off


async def test_http_never_retries_other_errors(echo_url: str) -> None:
    async with _client(echo_url, "http", http_retries=3) as client:
        with pytest.raises(InvalidRequestError, match="no such thing as a bad echo"):
            await client._call("echo", {"text": "x"}, "/v1/bad/once")
    assert await _calls("once") == 1


async def test_a_closed_port_is_unavailable_after_the_retries_quickly() -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    async with EchoClient(_settings(http_retries=2), mode="http", base_url=closed) as client:
        started = time.perf_counter()
        with pytest.raises(UnavailableError, match="3 attempts"):
            await client.echo("x")
        assert time.perf_counter() - started < 2


async def test_an_unknown_route_is_not_found(echo_url: str) -> None:
    from handler_base.errors import NotFoundError

    async with _client(echo_url, "http") as client:
        with pytest.raises(NotFoundError):
            await client._call("echo", {"text": "x"}, "/v1/nowhere")


async def test_http_sends_the_api_key_as_bearer_token(echo_url: str) -> None:
    async with _client(echo_url, "http", service_api_key="s3cret") as client:
        headers = await client._call("headers", None, "/v1/headers", http_method="GET")
    assert headers["authorization"] == "Bearer s3cret"


# --- pieces that need no cluster --------------------------------------------------------


async def test_sse_parsing() -> None:
    async def lines() -> AsyncIterator[str]:
        for line in [
            ": a comment",
            "event: text",
            "data: one",
            "data:two",
            "",
            "",
            "id: 7",
            'data: {"x": 1}',
            "",
            "data: [DONE]",
        ]:
            yield line

    events = [event async for event in _parse_sse(lines())]
    assert events == [
        ServerSentEvent(data="one\ntwo", event="text"),
        ServerSentEvent(data='{"x": 1}', id="7"),
        ServerSentEvent(data="[DONE]"),
    ]


def test_retry_after_in_seconds_and_as_a_date() -> None:
    client = EchoClient(_settings(), mode="http", base_url="http://127.0.0.1:1")

    def wait(value: str) -> float | None:
        return client._retry_after(httpx.Response(503, headers={"Retry-After": value}))

    assert wait("2") == 2.0
    assert wait("9999") == client.retry_after_max_s
    assert wait("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert wait("soon") is None
