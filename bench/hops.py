"""One hop, three ways: a DeploymentHandle, HTTP through Serve's proxy, and the NATS bridge.

An ``Echo`` deployment (no model; it returns its input) on a local Ray Serve, and a
``Caller`` deployment that times, inside its replica (where the handlers run), one hop to
the echo each of three ways, with the product's own client code:

* ``handle``: ``EchoClient(mode="handle")``, a Ray handle (how handlers call models);
* ``raw handle``: ``serve.get_deployment_handle(...).echo.remote()`` with no client
  around it, to tell the client's own cost from Serve's;
* ``http``: ``EchoClient(mode="http")``, a POST through Serve's HTTP proxy;
* ``nats``: :func:`handler_base.messaging.request` on a bench subject, served by one
  bridge actor (core mode, shipped limits) whose route (a :class:`RouteSpec` the bench
  builds, added through ``BridgeConfig.routes``) calls the echo with an ``EchoClient``.

The ways are interleaved round by round: a round is ``c`` calls of one way at once (``c``
concurrent callers), then the next way; ``-n`` calls of each way at each ``c`` (1 and 16).
Only the hop is timed, not the driver's call into the caller.

Run: ``.venv/bin/python bench/hops.py -n 500``; ``--quick`` for a smoke run (n=50).
"""

import argparse
import asyncio
import time
import uuid
from typing import Any

from pydantic import BaseModel

from _common import local_serve, markdown_table, print_result, summarize
from handler_base.clients import ServiceClient
from handler_base.testing.nats import NatsServer
from handler_base.testing.nats_fixtures import nats_test_settings
from pipeline_bridge import BridgeConfig, start_bridges, stop_bridges
from pipeline_bridge.routes import RouteSpec

SUBJECT = "bench.hops.echo"
WAYS = ("handle", "raw handle", "http", "nats")
CONCURRENCY = (1, 16)


class EchoMessage(BaseModel):
    """What the echo gets and gives back: a ChatRequest-sized text."""

    text: str


class EchoClient(ServiceClient):
    """Calls the bench's ``Echo`` deployment (app ``echo``)."""

    service = "chat"  # only names a settings URL; the HTTP way passes its own base_url
    app_name = "echo"
    deployment_name = "Echo"

    async def echo(self, message: EchoMessage) -> EchoMessage:
        return EchoMessage.model_validate(await self._call("echo", message, "/"))


async def _raw_echo(handle: Any, message: EchoMessage) -> EchoMessage:
    return EchoMessage.model_validate(await handle.echo.remote(message))


def hop_apps(settings: Any, serve_url: str) -> Any:
    """Deploy the echo and the caller; the caller's handle."""
    from ray import serve
    from starlette.requests import Request

    @serve.deployment(ray_actor_options={"num_cpus": 0.1})
    class Echo:
        async def __call__(self, request: Request) -> dict[str, Any]:
            return dict(await request.json())

        async def echo(self, message: EchoMessage) -> dict[str, Any]:
            return message.model_dump()

    @serve.deployment(ray_actor_options={"num_cpus": 0.1})
    class Caller:
        async def measure(self, n: int, concurrency: int) -> dict[str, list[float]]:
            from handler_base.messaging import connect, request

            message = EchoMessage(text="x" * 300)
            nc = await connect(settings)
            raw = serve.get_deployment_handle("Echo", app_name="echo")
            clients = {
                "handle": EchoClient(settings, mode="handle"),
                "http": EchoClient(settings, mode="http", base_url=f"{serve_url}/echo"),
            }
            calls = {
                "handle": lambda: clients["handle"].echo(message),
                "raw handle": lambda: _raw_echo(raw, message),
                "http": lambda: clients["http"].echo(message),
                "nats": lambda: request(nc, SUBJECT, message, EchoMessage, 30),
            }

            async def one(way: str) -> float:
                start = time.perf_counter()
                reply = await calls[way]()
                elapsed = time.perf_counter() - start
                assert reply.text == message.text
                return elapsed

            times: dict[str, list[float]] = {way: [] for way in WAYS}
            rounds = -(-n // concurrency)
            warmup = max(1, 20 // concurrency)
            try:
                for i in range(warmup + rounds):
                    for way in WAYS:
                        batch = await asyncio.gather(*(one(way) for _ in range(concurrency)))
                        if i >= warmup:
                            times[way].extend(batch)
            finally:
                for client in clients.values():
                    await client.aclose()
                await nc.close()
            return times

    serve.run(Echo.bind(), name="echo", route_prefix="/echo")  # type: ignore[attr-defined]
    serve.run(Caller.bind(), name="caller", route_prefix="/caller")  # type: ignore[attr-defined]
    return serve.get_deployment_handle("Caller", app_name="caller")


def measure(n: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with NatsServer(jetstream=False) as nats_server, local_serve() as serve_url:
        settings = nats_test_settings(nats_server.url, nats_request_timeout_s=60)
        route = RouteSpec(
            name="echo",
            subject=SUBJECT,
            request_model=EchoMessage,
            client=EchoClient,
            method="echo",
        )
        namespace = f"bench-{uuid.uuid4().hex[:6]}"
        config = BridgeConfig(mode="core", namespace=namespace, routes=(route,))
        caller = hop_apps(settings, serve_url)
        actors = start_bridges(1, config, settings)  # kept: Ray ends an unreferenced actor
        try:
            for concurrency in CONCURRENCY:
                times = caller.measure.remote(n, concurrency).result(timeout_s=1800)
                results[f"c={concurrency}"] = {
                    way: {"n": len(times[way]), **summarize(times[way], digits=2)} for way in WAYS
                }
        finally:
            stop_bridges(config, count=len(actors))
    for summary in results.values():
        handle, http, nats = (summary[way]["p50_ms"] for way in ("handle", "http", "nats"))
        summary["http_over_handle_p50"] = round(http / handle, 2)
        summary["nats_minus_handle_p50_ms"] = round(nats - handle, 2)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=500, help="calls of each way at each concurrency")
    parser.add_argument("--quick", action="store_true", help="50 calls of each way")
    args = parser.parse_args()
    n = 50 if args.quick else args.n
    results = measure(n)
    rows = [
        [key, way, results[key][way]["n"], results[key][way]["p50_ms"], results[key][way]["p99_ms"]]
        for key in results
        for way in WAYS
    ]
    table = markdown_table(["callers", "one hop", "n", "p50 ms", "p99 ms"], rows, "llrrr")
    print_result({"bench": "hops", "n": n, "results": results}, table)


if __name__ == "__main__":
    main()
