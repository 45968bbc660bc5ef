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
   against unbatched, by handle: ``--rounds`` rounds, the two deployments taking turns
   within each; texts per second of each round (p50 over rounds, ratio of the medians),
   the model compute the replica reported per request, and the batch sizes each replica
   achieved (its ``stats``, read before and after).

``--tune``: only part 2, over the settings in :data:`TUNE_VARIANTS` (``max_batch_size``,
``batch_wait_timeout_s``, onnxruntime ``threads``), each its own embeddings app, all
deployed side by side and taking turns within every round, against unbatched.

Run: ``.venv/bin/python bench/embeddings.py [--requests 200] [--concurrency 32] [--rounds 5]``
(``--quick``: a minute; ``--tune --rounds 10``: the settings).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

from _common import (
    Call,
    deploy_model_app,
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
# The settings --tune compares (EmbeddingsArgs fields); "shipped" is the defaults.
# onnxruntime's inter-op threads are not among them: the session runs its graph
# sequentially (ORT's default execution mode), and inter-op threads only serve the
# parallel mode.
TUNE_VARIANTS: dict[str, dict[str, Any]] = {
    "unbatched": {"max_batch_size": 1},
    "shipped": {},
    "batch 8": {"max_batch_size": 8},
    "batch 16": {"max_batch_size": 16},
    "batch 32": {"max_batch_size": 32},
    "wait 0.002 s": {"batch_wait_timeout_s": 0.002},
    "wait 0.03 s": {"batch_wait_timeout_s": 0.03},
    "1 thread": {"threads": 1},
    "unbatched, 1 thread": {"max_batch_size": 1, "threads": 1},
}

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


async def batch_stats(app: str) -> dict[str, Any]:
    """The achieved batch sizes of ``app``'s embeddings replica (its ``stats`` method)."""
    from ray import serve

    stats: dict[str, Any] = await serve.get_deployment_handle(
        "EmbeddingsDeployment", app_name=app
    ).stats.remote()
    return stats


def batches_since(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Runs, texts and sizes of the batches between two ``stats`` readings."""
    runs = after["batches"] - before["batches"]
    sizes = after["recent"][-runs:] if runs else []
    return {
        "runs": runs,
        "texts": after["texts"] - before["texts"],
        "mean_size": round(statistics.mean(sizes), 2) if sizes else 0.0,
        "max_size": max(sizes, default=0),
    }


async def batching(
    clients: dict[str, EmbeddingsClient], callers: int, per_caller: int, rounds: int
) -> dict[str, Any]:
    """``rounds`` rounds of ``callers`` one-text callers, each deployment in turn.

    ``clients`` must hold an ``unbatched`` one: each deployment's ratio is over it.
    """
    per_round: dict[str, list[float]] = {name: [] for name in clients}
    model_ms: dict[str, list[float]] = {name: [] for name in clients}
    call_s: dict[str, list[float]] = {name: [] for name in clients}
    achieved: dict[str, list[dict[str, Any]]] = {name: [] for name in clients}
    apps = {name: client.app for name, client in clients.items()}
    for round_no in range(1, rounds + 1):
        for name, client in clients.items():

            async def call(i: int, client: EmbeddingsClient = client, name: str = name) -> None:
                start = time.perf_counter()
                answer = await client.embed_answer([f"{SENTENCE} ({i})"])
                call_s[name].append(time.perf_counter() - start)
                model_ms[name].append(answer.model_time_ms or 0.0)

            before = await batch_stats(apps[name])
            per_round[name].append(await throughput(lambda i: lambda: call(i), callers, per_caller))
            achieved[name].append(batches_since(before, await batch_stats(apps[name])))
        # Progress, so that a run cut short still leaves its rounds.
        done = {name: round(texts[-1], 1) for name, texts in per_round.items()}
        print(json.dumps({"round": round_no, "texts_per_s": done}), flush=True)
    result: dict[str, Any] = {"callers": callers, "per_caller": per_caller, "rounds": rounds}
    for name in clients:
        result[name] = {
            "texts_per_s_p50": round(statistics.median(per_round[name]), 1),
            "texts_per_s_min": round(min(per_round[name]), 1),
            "texts_per_s_rounds": [round(x, 1) for x in per_round[name]],
            "call_ms": summarize(call_s[name], digits=1),
            "model_ms_per_request": summarize([m / 1000 for m in model_ms[name]], digits=2),
            "mean_batch_size": round(statistics.mean(a["mean_size"] for a in achieved[name]), 2),
            "max_batch_size": max(a["max_size"] for a in achieved[name]),
        }
    unbatched = result["unbatched"]["texts_per_s_p50"]
    for name in clients:
        result[name]["over_unbatched"] = round(result[name]["texts_per_s_p50"] / unbatched, 2)
    return result


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

        results["batching"] = await batching(
            {"batched": emb_handle, "unbatched": emb_unbatched},
            args.concurrency,
            args.per_caller,
            args.rounds,
        )
    return results


async def tune(args: argparse.Namespace, apps: dict[str, str]) -> dict[str, Any]:
    """Part 2 over the ``--tune`` variants, deployed as ``apps`` (variant to app name)."""
    async with contextlib.AsyncExitStack() as stack:
        clients = {
            name: await stack.enter_async_context(EmbeddingsClient(mode="handle", app_name=app))
            for name, app in apps.items()
        }
        return await batching(clients, args.concurrency, args.per_caller, args.rounds)


def tune_table(b: dict[str, Any]) -> str:
    rows = [
        [
            name,
            json.dumps(TUNE_VARIANTS[name]) if TUNE_VARIANTS[name] else "(defaults)",
            b[name]["texts_per_s_p50"],
            b[name]["texts_per_s_min"],
            b[name]["over_unbatched"],
            b[name]["mean_batch_size"],
            b[name]["call_ms"]["p50_ms"],
            b[name]["call_ms"]["p99_ms"],
        ]
        for name in TUNE_VARIANTS
    ]
    headers = [
        f"{b['callers']} callers x {b['per_caller']}, n={b['rounds']} rounds",
        "args",
        "texts/s p50",
        "texts/s worst round",
        "/ unbatched",
        "mean batch",
        "call ms p50",
        "call ms p99",
    ]
    return markdown_table(headers, rows, "llrrrrrr")


def table(results: dict[str, Any]) -> str:
    paths = [
        [name, path, *(results[name][path][k] for k in ("p50_ms", "p99_ms", "mean_ms"))]
        for name in ("embeddings", "reranker")
        for path in ("handle", "http")
    ]
    ratios = [[name, results[name]["http_over_handle_p50"]] for name in ("embeddings", "reranker")]
    b = results["batching"]
    batching = [
        [
            label,
            b[name]["texts_per_s_p50"],
            b[name]["mean_batch_size"],
            b[name]["max_batch_size"],
            b[name]["model_ms_per_request"]["p50_ms"],
            b[name]["model_ms_per_request"]["p99_ms"],
        ]
        for name, label in (
            ("batched", "batched (`@serve.batch`)"),
            ("unbatched", "unbatched (`max_batch_size=1`)"),
        )
    ]
    return "\n\n".join(
        [
            markdown_table(["deployment", "path", "p50 ms", "p99 ms", "mean ms"], paths, "llrrr"),
            markdown_table(["", "HTTP / handle (p50)"], ratios, "lr"),
            markdown_table(
                [
                    f"{b['callers']} callers x {b['per_caller']}, {b['rounds']} rounds",
                    "texts/s p50",
                    "mean batch",
                    "max batch",
                    "model ms/request p50",
                    "p99",
                ],
                batching,
                "lrrrrr",
            ),
            f"batched / unbatched (texts/s p50): {b['batched']['over_unbatched']}",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="sequential calls per path")
    parser.add_argument("--concurrency", type=int, default=32, help="callers in flight")
    parser.add_argument("--per-caller", type=int, default=8, help="calls of each caller")
    parser.add_argument("--rounds", type=int, default=5, help="batching rounds, in turns")
    parser.add_argument("--quick", action="store_true", help="tiny n: about a minute")
    parser.add_argument("--tune", action="store_true", help="batching settings side by side")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.per_caller, args.rounds = 20, 2, 2

    import ray
    from ray import serve

    from ray_inference import embeddings, reranker

    if args.tune:
        apps = {name: f"embeddings-tune-{i}" for i, name in enumerate(TUNE_VARIANTS)}
        with local_serve():
            for name, app in apps.items():
                serve.run(
                    embeddings.build_app(TUNE_VARIANTS[name]), name=app, route_prefix=f"/{app}"
                )
            tuned = asyncio.run(tune(args, apps))
        record = {"bench": "embeddings-tune", "args": vars(args), "cpus": os.cpu_count(), **tuned}
        print_result(record, tune_table(tuned))
        return

    with local_serve() as http_url:
        deploy_model_app(embeddings.build_app(), "embeddings")
        serve.run(
            embeddings.build_app({"max_batch_size": 1}),
            name="embeddings-unbatched",
            route_prefix="/embeddings-unbatched",
        )
        deploy_model_app(reranker.build_app(), "reranker")
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
