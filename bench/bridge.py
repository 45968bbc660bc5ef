"""The NATS bridge: what the NATS path costs over a direct handle call, and its throughput.

Deploys the embeddings, reranker and chat apps on a local Ray (Milvus Lite in a temporary
folder, an empty knowledge base) and starts a nats-server on loopback. Every request asks
the chat handler about a collection that does not exist, which it answers after the
embedding and the search, without the LLM: the handler's own work stays small, so the
transport's share shows. Four paths to the same handler method, one client at a time:

* ``handle``: the driver calls ``ChatDeployment.chat`` through ``ChatClient`` (a Ray handle);
* ``nats core``: a NATS request to one bridge actor (core mode), which makes that call;
* ``nats at-least-once``: the same through the JetStream stream, the durable consumer and
  the replies bucket (``request_durably``).

Then throughput: ``--concurrency`` clients sending NATS requests, with one and with two
bridge actors (core mode).

Run: ``.venv/bin/python bench/bridge.py -n 200``
"""

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _common import deploy_model_app, local_serve, markdown_table, print_result, summarize, timed
from handler_base.clients import ChatClient
from handler_base.messages import ChatRequest, ChatResponse
from handler_base.messaging import connect, request, request_durably
from handler_base.testing.nats import NatsServer
from handler_base.testing.nats_fixtures import nats_test_settings
from pipeline_bridge import BridgeConfig, start_bridges, stop_bridges

SUBJECT = "ai.chat.request"
EMPTY = "nothing_here"


def question() -> ChatRequest:
    return ChatRequest(query="How much does the ZX-41 flux capacitor cost?", collection=EMPTY)


async def latencies(url: str, n: int) -> dict[str, Any]:
    settings = nats_test_settings(url, nats_request_timeout_s=60)
    results: dict[str, Any] = {}
    async with ChatClient(settings) as chat:
        times = await timed(lambda: chat.chat(question()), n, warmup=5)
        results["handle"] = summarize(times, mean=True)
    nc = await connect(settings)
    try:
        for mode in ("core", "at_least_once"):
            config = BridgeConfig(mode=mode, namespace=f"bench-{uuid.uuid4().hex[:6]}")
            # Kept: Ray ends an actor once no handle to it is left.
            actors = await asyncio.to_thread(start_bridges, 1, config, settings)
            try:
                if mode == "core":
                    times = await timed(
                        lambda: request(nc, SUBJECT, question(), ChatResponse, 60), n, warmup=5
                    )
                else:
                    # A fresh request id each time: a repeat would be answered from the store.
                    times = await timed(
                        lambda: request_durably(
                            nc,
                            SUBJECT,
                            question().model_copy(update={"request_id": uuid.uuid4().hex}),
                            ChatResponse,
                            60,
                        ),
                        n,
                        warmup=5,
                    )
                results[f"nats {mode}"] = summarize(times, mean=True)
            finally:
                await asyncio.to_thread(stop_bridges, config, count=len(actors))
                if mode == "at_least_once":  # the stream would capture core requests too
                    await nc.jetstream().delete_stream(config.stream)
    finally:
        await nc.close()
    return results


async def throughput(url: str, n: int, concurrency: int, actors: int) -> dict[str, Any]:
    settings = nats_test_settings(url, nats_request_timeout_s=120)
    config = BridgeConfig(namespace=f"bench-{uuid.uuid4().hex[:6]}")
    handles = await asyncio.to_thread(start_bridges, actors, config, settings)
    nc = await connect(settings)
    try:
        for _ in range(5):
            await request(nc, SUBJECT, question(), ChatResponse, 120)
        left = n

        async def client() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await request(nc, SUBJECT, question(), ChatResponse, 120)

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    finally:
        await nc.close()
        await asyncio.to_thread(stop_bridges, config, count=len(handles))
    return {"actors": actors, "concurrency": concurrency, "requests_per_s": round(n / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="requests per measurement")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="-n 16, 4 in flight")
    args = parser.parse_args()
    if args.quick:
        args.n, args.concurrency = 16, 4

    from ray import serve

    from chat_handler import build_app as build_chat
    from ray_inference.embeddings import build_app as build_embeddings
    from ray_inference.reranker import build_app as build_reranker

    with (
        tempfile.TemporaryDirectory() as data,
        NatsServer() as nats,
        local_serve(),
    ):
        deploy_model_app(build_embeddings(None), "embeddings")
        deploy_model_app(build_reranker(None), "reranker")
        milvus = str(Path(data) / "milvus.db")
        serve.run(build_chat({"milvus_uri": milvus}), name="chat", route_prefix="/chat")
        lat = asyncio.run(latencies(nats.url, args.n))
        rates = [
            asyncio.run(throughput(nats.url, args.n, args.concurrency, actors)) for actors in (1, 2)
        ]
    base = lat["handle"]["p50_ms"]
    result = {
        "bench": "bridge",
        "n": args.n,
        "latency": lat,
        "nats_core_over_handle_p50_ms": round(lat["nats core"]["p50_ms"] - base, 1),
        "nats_at_least_once_over_handle_p50_ms": round(
            lat["nats at_least_once"]["p50_ms"] - base, 1
        ),
        "throughput": rates,
    }
    rows = [
        [path, s["p50_ms"], s["p99_ms"], s["mean_ms"], round(s["p50_ms"] - base, 1)]
        for path, s in lat.items()
    ]
    table = markdown_table(
        ["path (1 client)", "p50 ms", "p99 ms", "mean ms", "p50 over handle"], rows, "lrrrr"
    )
    table += "\n\n" + markdown_table(
        ["bridge actors", "clients", "requests/s"],
        [[r["actors"], r["concurrency"], r["requests_per_s"]] for r in rates],
        "rrr",
    )
    print_result(result, table)


if __name__ == "__main__":
    main()
