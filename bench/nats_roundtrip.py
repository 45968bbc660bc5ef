"""NATS request/reply round trip: our typed serving helper + request() against bare nats-py.

Starts its own nats-server on loopback. Both sides echo a ChatRequest-sized message and
answer with a ChatResponse-sized one, on separate connections:

* ``bare``: ``nc.subscribe`` with a callback that responds with ready-made bytes, and
  ``nc.request`` with ready-made bytes (no JSON, no validation, no tracing);
* ``typed``: :class:`handler_base.messaging.RequestServer` (decode + validate the
  ChatRequest, run the handler in a task, encode its ready-made ChatResponse, span) and
  :func:`handler_base.messaging.request` (encode, span, inject trace headers, decode +
  validate the reply).

Sequential requests measure latency; ``--concurrency`` requests in flight measure
throughput. Run: ``uv run python bench/nats_roundtrip.py [-n 2000] [--concurrency 16]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from importlib import metadata
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from _common import Call, percentile
from handler_base.messages import ChatRequest, ChatResponse, HistoryMessage, Source
from handler_base.messaging import RequestServer, connect, flush, request
from handler_base.settings import Settings
from handler_base.testing.nats import NatsServer

SUBJECT = "bench.chat.request"


def chat_request() -> ChatRequest:
    """A realistic question: a 300-character query and two turns of history."""
    return ChatRequest(
        query="How do I configure the reranker deployment for the cpu profile? " * 5,
        history=[
            HistoryMessage(role="user", content="What does the chat handler do? " * 6),
            HistoryMessage(role="assistant", content="It answers with RAG over Milvus. " * 6),
        ],
        collection="docs",
        request_id="bench-0001",
    )


def chat_response(request: ChatRequest) -> ChatResponse:
    """A realistic answer: the query echoed and five 400-character sources."""
    return ChatResponse(
        response=request.query,
        sources=[
            Source(
                id=f"doc-{i}",
                text="The reranker scores each passage against the query. " * 8,
                score=0.9 - i / 10,
                metadata={"doc_id": f"doc-{i}", "chunk": i, "title": "Deployment guide"},
            )
            for i in range(5)
        ],
        request_id=request.request_id,
    )


async def measure(call: Call, n: int, concurrency: int) -> dict[str, float]:
    """Run ``n`` calls with ``concurrency`` in flight; latency in microseconds."""
    latencies: list[float] = []
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter_ns()
            await call()
            latencies.append((time.perf_counter_ns() - started) / 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "n": n,
        "p50_us": round(percentile(latencies, 50), 1),
        "p99_us": round(percentile(latencies, 99), 1),
        "mean_us": round(statistics.fmean(latencies), 1),
        "throughput_rps": round(n / elapsed, 1),
    }


async def bare_side(server_nc: NATS, client_nc: NATS, reply: bytes, body: bytes) -> Call:
    async def respond(msg: Msg) -> None:
        await msg.respond(reply)

    await server_nc.subscribe(SUBJECT, queue=SUBJECT, cb=respond)
    await flush(server_nc)

    async def call() -> Msg:
        return await client_nc.request(SUBJECT, body, timeout=10)

    return call


async def typed_side(server_nc: NATS, client_nc: NATS, max_in_flight: int) -> Call:
    payload = chat_request()
    reply = chat_response(payload)  # made once, like the bare side's bytes

    async def handler(req: ChatRequest) -> ChatResponse:
        return reply

    await RequestServer(
        server_nc, SUBJECT, handler, ChatRequest, max_in_flight=max_in_flight
    ).start()

    async def call() -> ChatResponse:
        return await request(client_nc, SUBJECT, payload, ChatResponse, timeout=10)

    return call


async def run_variant(
    name: str, url: str, args: argparse.Namespace, concurrency: int
) -> dict[str, float]:
    settings = Settings(nats_url=url, nats_name=f"bench-{name}")
    server_nc = await connect(settings)
    client_nc = await connect(settings)
    try:
        if name == "bare":
            payload = chat_request()
            body = payload.model_dump_json().encode()
            reply = chat_response(payload).model_dump_json().encode()
            call = await bare_side(server_nc, client_nc, reply, body)
        else:
            call = await typed_side(server_nc, client_nc, max(64, concurrency))
        await measure(call, args.warmup, concurrency)
        return await measure(call, args.n, concurrency)
    finally:
        await server_nc.close()
        await client_nc.close()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    payload = chat_request()
    sizes = {
        "request_bytes": len(payload.model_dump_json()),
        "reply_bytes": len(chat_response(payload).model_dump_json()),
    }
    results: dict[str, Any] = {}
    with NatsServer(jetstream=False) as server:
        for mode, concurrency in (("sequential", 1), ("concurrent", args.concurrency)):
            for name in ("bare", "typed"):
                runs = [
                    await run_variant(name, server.url, args, concurrency)
                    for _ in range(args.rounds)
                ]
                # Each round is a fresh pair of connections; keep the best-p50 round.
                results[f"{mode}/{name}"] = min(runs, key=lambda r: r["p50_us"])
    overhead = {
        mode: {
            "p50_ratio": round(
                results[f"{mode}/typed"]["p50_us"] / results[f"{mode}/bare"]["p50_us"], 2
            ),
            "p50_added_us": round(
                results[f"{mode}/typed"]["p50_us"] - results[f"{mode}/bare"]["p50_us"], 1
            ),
            "throughput_ratio": round(
                results[f"{mode}/typed"]["throughput_rps"]
                / results[f"{mode}/bare"]["throughput_rps"],
                2,
            ),
        }
        for mode in ("sequential", "concurrent")
    }
    return {
        "bench": "nats_roundtrip",
        "n": args.n,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        **sizes,
        "python": platform.python_version(),
        "nats_py": metadata.version("nats-py"),
        "results": results,
        "overhead": overhead,
    }


def print_table(report: dict[str, Any]) -> None:
    print(
        f"\nNATS request/reply, {report['n']} requests after {report['warmup']} warm-up, "
        f"request {report['request_bytes']} B, reply {report['reply_bytes']} B"
    )
    header = f"{'mode':<22}{'p50 us':>10}{'p99 us':>10}{'mean us':>10}{'req/s':>10}"
    print(header)
    print("-" * len(header))
    for key, r in report["results"].items():
        label = key.replace("sequential", "sequential").replace(
            "concurrent", f"c={report['concurrency']}"
        )
        print(
            f"{label:<22}{r['p50_us']:>10.1f}{r['p99_us']:>10.1f}{r['mean_us']:>10.1f}{r['throughput_rps']:>10.0f}"
        )
    for mode, o in report["overhead"].items():
        print(
            f"{mode}: typed/bare p50 x{o['p50_ratio']} (+{o['p50_added_us']} us), "
            f"throughput x{o['throughput_ratio']}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=2000, help="measured requests per variant")
    parser.add_argument("--warmup", type=int, default=300, help="requests before measuring")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--rounds", type=int, default=1, help="runs per variant (best kept)")
    parser.add_argument("--quick", action="store_true", help="-n 100 after 20")
    args = parser.parse_args()
    if args.quick:
        args.n, args.warmup = 100, 20
    report = asyncio.run(main(args))
    print(json.dumps(report))
    print_table(report)
