"""Overload: the request guard shedding against an unbounded queue, at and beyond capacity.

Deploys the cpu profile's embeddings, reranker and LLM apps and two copies of the chat
handler on a local Ray: ``/chat-guarded`` takes ``--working`` requests at once and lets
``--waiting`` more wait (the guard sheds the rest with 503 ``unavailable`` and
``Retry-After``); ``/chat-unbounded`` is the same deployment with the same working limit
and no bound on the wait (Serve's queue unbounded too). For each, ``C`` closed-loop clients
ask questions over HTTP for ``--duration`` seconds, at C = working + waiting (about
capacity) and at 4 times that; a shed client waits its ``Retry-After`` and asks again.
Then one probe asks every 0.25 s until it is answered: the time to recover.

``--shipped``: instead, ``/chat-shipped`` with the limits ``aictl up``'s cpu profile ships
(``aictl.apps.HANDLER_SCALE``) against ``/chat-builder`` with the chat builder's defaults
(32 working + 128 waiting, what the cpu profile shipped before), at 1, 2 and 4 times the
sustainable load (``--working`` + ``--waiting`` closed-loop clients).

Run: ``.venv/bin/python bench/overload.py --duration 60 [--shipped] [--loads 1 4]``;
``--quick``: one load, 5 s rounds (to try the script).
"""

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from _common import deploy_model_app, local_serve, markdown_table, print_result, summarize

PRODUCTS = [
    ("ZX-41", "flux capacitor", "teal", 417),
    ("QB-7", "harmonic resonator", "amber", 129),
    ("LM-88", "plasma coupler", "violet", 2310),
]
CORPUS = [
    {
        "id": code.lower(),
        "text": f"The {code} {name} ships in {colour} and costs {price} euros.",
        "metadata": {"title": f"{code} {name}"},
    }
    for code, name, colour, price in PRODUCTS
]


def question(i: int) -> dict[str, Any]:
    return {"query": f"How much does the {PRODUCTS[i % len(PRODUCTS)][0]} cost?", "top_n": 2}


async def load(url: str, clients: int, duration_s: float) -> dict[str, Any]:
    """``clients`` closed-loop clients for ``duration_s``; then the time to recover."""
    admitted: list[float] = []
    shed = 0
    shed_by_serve = 0
    other: list[int] = []
    end = time.perf_counter() + duration_s
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=900, limits=limits) as http:

        async def client(index: int) -> None:
            nonlocal shed, shed_by_serve
            i = index
            while time.perf_counter() < end:
                start = time.perf_counter()
                response = await http.post("", json=question(i))
                i += clients
                if response.status_code == 200:
                    admitted.append(time.perf_counter() - start)
                elif response.status_code == 503:
                    shed += 1
                    # Serve's own 503 (its queue full) keeps its words in the message.
                    shed_by_serve += "backpressure" in response.text
                    await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                else:
                    other.append(response.status_code)

        load_start = time.perf_counter()
        workers = [asyncio.create_task(client(i)) for i in range(clients)]
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        # The load stops: no new requests; the probe measures how soon one is answered.
        stop = time.perf_counter()
        probe_answered = None
        while probe_answered is None:
            response = await http.post("", json=question(0))
            if response.status_code == 200:
                probe_answered = time.perf_counter()
            else:
                await asyncio.sleep(0.25)
        await asyncio.gather(*workers)
        drained = time.perf_counter()
    return {
        "clients": clients,
        "admitted": len(admitted),
        "shed": shed,
        "shed_by_serve": shed_by_serve,
        "other_errors": other,
        "admitted_latency": summarize(admitted, median=True) if admitted else {},
        "answers_per_s": round(len(admitted) / (drained - load_start), 3),
        "recover_s": round(probe_answered - stop, 1),
    }


def table(rounds: list[dict[str, Any]]) -> str:
    rows = [
        [
            r["mode"],
            r["clients"],
            r["admitted"],
            f"{r['shed']} ({r['shed_by_serve']})",
            r["admitted_latency"].get("p50_ms", "-"),
            r["admitted_latency"].get("p99_ms", "-"),
            r["answers_per_s"],
            r["recover_s"],
        ]
        for r in rounds
    ]
    headers = [
        "queue",
        "clients",
        "admitted",
        "shed 503 (by Serve)",
        "admitted p50 ms",
        "admitted p99 ms",
        "answers/s",
        "recover s",
    ]
    return markdown_table(headers, rows, align="lrrrrrrr")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load a round")
    parser.add_argument("--working", type=int, default=2, help="the guard's working requests")
    parser.add_argument("--waiting", type=int, default=2, help="the guard's waiting requests")
    parser.add_argument("--shipped", action="store_true", help="the shipped limits, 1/2/4x")
    parser.add_argument(
        "--loads", type=int, nargs="+", help="times the sustainable load (1 4, 1 2 4 shipped)"
    )
    parser.add_argument("--quick", action="store_true", help="one load, 5 s rounds")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.loads = 5.0, args.loads or [1]

    from ray import serve

    from aictl.apps import HANDLER_SCALE
    from chat_handler.deployment import ChatArgs, ChatDeployment
    from handler_base.http import AdmissionLimits
    from ray_inference.embeddings import build_app as build_embeddings
    from ray_inference.llm import build_app as build_llm
    from ray_inference.reranker import build_app as build_reranker

    capacity = args.working + args.waiting
    with tempfile.TemporaryDirectory() as data, local_serve() as base_url:
        deploy_model_app(build_embeddings({"profile": "cpu"}), "embeddings")
        deploy_model_app(build_reranker({"profile": "cpu"}), "reranker")
        deploy_model_app(build_llm({"profile": "cpu"}), "llm")
        guarded = ChatArgs(
            num_cpus=0.1, max_ongoing_requests=args.working, max_queued_requests=args.waiting
        )
        configs = {
            "guarded": (guarded.deployment_options(), guarded.admission()),
            "unbounded": (
                {
                    **guarded.deployment_options(),
                    "max_ongoing_requests": 10_000,
                    "max_queued_requests": -1,
                },
                AdmissionLimits(max_working=args.working, max_waiting=None),
            ),
        }
        if args.shipped:
            shipped = ChatArgs(**HANDLER_SCALE["cpu"]["chat"].model_dump(exclude_unset=True))
            builder = ChatArgs(num_cpus=0.1)
            configs = {
                "shipped": (shipped.deployment_options(), shipped.admission()),
                "builder": (builder.deployment_options(), builder.admission()),
            }
        for mode, (options, admission) in configs.items():
            milvus = str(Path(data) / f"{mode}.db")
            serve.run(
                ChatDeployment.options(**options).bind(  # type: ignore[attr-defined]
                    guarded.model_copy(update={"milvus_uri": milvus}), admission
                ),
                name=f"chat-{mode}",
                route_prefix=f"/chat-{mode}",
            )
            httpx.post(
                f"{base_url}/chat-{mode}/knowledge/documents",
                json={"documents": CORPUS},
                timeout=300,
            ).raise_for_status()
            httpx.post(f"{base_url}/chat-{mode}", json=question(1), timeout=300).raise_for_status()
        rounds = []
        loads = args.loads or ((1, 2, 4) if args.shipped else (1, 4))
        for clients in (factor * capacity for factor in loads):
            for mode in configs:
                result = asyncio.run(load(f"{base_url}/chat-{mode}", clients, args.duration))
                rounds.append({"mode": mode, **result})
                print(rounds[-1], flush=True)
    print_result(
        {
            "bench": "overload",
            "working": args.working,
            "waiting": args.waiting,
            "shipped": HANDLER_SCALE["cpu"]["chat"].model_dump(exclude_unset=True)
            if args.shipped
            else None,
            "duration_s": args.duration,
            "rounds": rounds,
        },
        table(rounds),
    )


if __name__ == "__main__":
    main()
