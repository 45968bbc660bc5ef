"""Embeddings and reranker deployments: handle against HTTP; batched against unbatched.

Starts its own local Ray (loopback, 2 CPUs) and Serve, deploys

* ``embeddings``: the embeddings app as shipped (``@serve.batch``, up to 64 texts a run);
* ``embeddings-unbatched``: the same class with ``max_batch_size=1`` (each text alone);
* ``reranker``: the reranker app as shipped (hybrid BM25 + MiniLM),

then measures, with the platform's clients (:class:`EmbeddingsClient`,
:class:`RerankerClient`):

1. latency of sequential calls by Ray handle and by HTTP (p50, p99, ratio): embeddings
   of one sentence, rerank of a query against 10 passages (a RAG ``top_k``);
2. throughput of one-sentence embeddings with ``--concurrency`` callers in flight, batched
   against unbatched (texts per second, ratio), by handle.

Run: ``.venv/bin/python bench/embeddings.py [--requests 200] [--concurrency 32]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
from collections.abc import Callable
from typing import Any

from _common import (
    Call,
    http_over_handle,
    local_serve,
    markdown_table,
    print_result,
    summarize,
    timed,
)
from handler_base.clients.embeddings import EmbeddingsClient
from handler_base.clients.reranker import RerankerClient

SENTENCE = "How do I configure the reranker deployment for the cpu profile?"
PASSAGES = [
    "The reranker scores each passage against the query and returns them best first.",
    "Milvus stores the vectors of the knowledge base on disk.",
    "Set RAY_AI_PROFILE=gpu to render the GPU layout of the deployments.",
    "The cpu profile gives each deployment a fraction of a core.",
    "Whisper transcribes the audio of a voice request.",
    "Piper speaks the answer sentence by sentence.",
    "The embeddings deployment batches texts of concurrent requests.",
    "Builder arguments select the reranker method and its model source.",
    "NATS carries chat requests from other services.",
    "Paris is the capital of France.",
]


async def latency(call: Call, n: int, warmup: int = 5) -> dict[str, float]:
    """``n`` sequential calls; milliseconds."""
    return summarize(await timed(call, n, warmup), digits=2, mean=True, median=True)


async def throughput(make_call: Callable[[int], Call], callers: int, per_caller: int) -> float:
    """Calls per second with ``callers`` loops of ``per_caller`` calls each."""

    async def caller(c: int) -> None:
        for i in range(per_caller):
            await make_call(c * per_caller + i)()

    await asyncio.gather(*(make_call(i)() for i in range(callers)))  # warm up
    start = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in range(callers)))
    return callers * per_caller / (time.perf_counter() - start)


async def run(args: argparse.Namespace, http_url: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with (
        EmbeddingsClient(mode="handle") as emb_handle,
        EmbeddingsClient(mode="http", base_url=f"{http_url}/embeddings") as emb_http,
        EmbeddingsClient(mode="handle", app_name="embeddings-unbatched") as emb_unbatched,
        RerankerClient(mode="handle") as rr_handle,
        RerankerClient(mode="http", base_url=f"{http_url}/reranker") as rr_http,
    ):
        for name, handle_client, http_client, make in (
            ("embeddings", emb_handle, emb_http, lambda c: lambda: c.embed_one(SENTENCE)),
            ("reranker", rr_handle, rr_http, lambda c: lambda: c.rerank(SENTENCE, PASSAGES)),
        ):
            by_handle = await latency(make(handle_client), args.requests)
            by_http = await latency(make(http_client), args.requests)
            results[name] = http_over_handle(by_handle, by_http, digits=2)

        def sentence_call(client: EmbeddingsClient) -> Callable[[int], Call]:
            return lambda i: lambda: client.embed_one(f"{SENTENCE} ({i})")

        batched = await throughput(sentence_call(emb_handle), args.concurrency, args.per_caller)
        unbatched = await throughput(
            sentence_call(emb_unbatched), args.concurrency, args.per_caller
        )
        results["batching"] = {
            "concurrency": args.concurrency,
            "texts": args.concurrency * args.per_caller,
            "batched_per_s": round(batched, 1),
            "unbatched_per_s": round(unbatched, 1),
            "ratio": round(batched / unbatched, 2),
        }
    return results


def table(results: dict[str, Any]) -> str:
    paths = [
        [name, path, *(results[name][path][k] for k in ("p50_ms", "p99_ms", "mean_ms"))]
        for name in ("embeddings", "reranker")
        for path in ("handle", "http")
    ]
    ratios = [[name, results[name]["http_over_handle_p50"]] for name in ("embeddings", "reranker")]
    b = results["batching"]
    batching = [
        ["batched (`@serve.batch`, max 64)", b["batched_per_s"]],
        ["unbatched (`max_batch_size=1`)", b["unbatched_per_s"]],
        ["ratio", b["ratio"]],
    ]
    return "\n\n".join(
        [
            markdown_table(["deployment", "path", "p50 ms", "p99 ms", "mean ms"], paths, "llrrr"),
            markdown_table(["", "HTTP / handle (p50)"], ratios, "lr"),
            markdown_table(
                [
                    f"embeddings, {b['concurrency']} callers, {b['texts']} one-sentence requests",
                    "texts/s",
                ],
                batching,
                "lr",
            ),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="sequential calls per path")
    parser.add_argument("--concurrency", type=int, default=32, help="callers in flight")
    parser.add_argument("--per-caller", type=int, default=8, help="calls of each caller")
    args = parser.parse_args()

    import ray
    from ray import serve

    from ray_inference import embeddings, reranker

    with local_serve() as http_url:
        serve.run(embeddings.build_app(), name="embeddings", route_prefix="/embeddings")
        serve.run(
            embeddings.build_app({"max_batch_size": 1}),
            name="embeddings-unbatched",
            route_prefix="/embeddings-unbatched",
        )
        serve.run(reranker.build_app(), name="reranker", route_prefix="/reranker")
        results = asyncio.run(run(args, http_url))
    record = {
        "bench": "embeddings",
        "args": vars(args),
        "python": platform.python_version(),
        "ray": ray.__version__,
        "cpus": os.cpu_count(),
        **results,
    }
    print_result(record, table(results), compact=False)


if __name__ == "__main__":
    main()
