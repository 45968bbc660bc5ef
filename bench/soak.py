"""Soak under faults: the whole platform under a bounded load while parts of it die.

Deploys what ``aictl up`` deploys in the cpu profile (embeddings, reranker, LLM, Whisper,
TTS, chat with Milvus Lite in a temporary folder, voice) on a local Ray, starts a
nats-server and one NATS bridge actor in at-least-once mode (the JetStream stream
``AI_REQUESTS``, the replies bucket ``AI_REPLIES``), and ingests a made-up fact.

Requests alternate between HTTP (the Serve proxy) and NATS (published into the stream with
a ``Reply-To`` subject, as ``request_durably`` does). Most are chat questions about a
collection that does not exist (embedding and search, no LLM); every ``--llm-every``-th is
a RAG question answered by the LLM, every ``--voice-every``-th a spoken question (Whisper,
RAG, LLM, TTS).

1. Memory: after a warm-up, the resident memory (RSS) of every process of the stack (each
   Serve replica, the Serve controller and proxy, the bridge actor, raylet, GCS,
   nats-server), then ``--memory-requests`` requests with no fault, then RSS again. The
   bound: no process grows by more than 50 MB plus 10 % of its size (allocator arenas and
   model runtimes settle in their first requests; a leak of 50 KB a request, a kept reply
   say, breaks it).
2. Faults: ``--requests`` requests from ``--clients`` clients, their starts spread evenly
   over five ``--fault-every`` intervals, while at the end of the first four (a) an
   embeddings replica is killed (``ray.kill``, no restart: Serve starts a new one),
   (b) the chat replica is killed the same way, (c) the bridge actor is killed (Ray
   restarts it), (d) the nats-server restarts on the same port and store.
3. Afterwards, with nothing done to help: a chat over each transport until both are
   answered, then one request of every kind over every transport.

What each request ends as (see :mod:`handler_base.testing.soak`): **answered** (a success
reply); **clear error** (the platform's error shape with a code, HTTP status and body or
a NATS error reply, before the deadline); **proxy 5xx** (HTTP: Serve's proxy answered a
request whose handler replica died, not in our shape: the proxy writes it); **not
accepted** (NATS: the stream never confirmed the request, the server was down);
**lost** (accepted, HTTP sent or NATS confirmed by the stream, and nothing by the
deadline); **duplicated** (more than one reply to one request: NATS reply subjects are
listened on until the run and a grace period are over). Lost and duplicated must be 0.

Run: ``.venv/bin/python bench/soak.py --requests 300 --clients 8``
"""

import argparse
import asyncio
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx

from _common import local_serve, markdown_table, print_result
from handler_base.testing.nats_fixtures import nats_test_settings
from handler_base.testing.platform import deploy_apps, platform_nats
from handler_base.testing.soak import (
    SOAK_COLLECTION,
    SOAK_DOCUMENTS,
    SOAK_QUESTION,
    SoakClient,
    SoakResult,
    Workload,
    every_kind_answered,
    fault_schedule,
    memory_growth,
    rss_mb,
    run_soak,
    stack_processes,
    wait_until_answered,
)
from handler_base.testing.speech import speak

ALLOWED_MB = 50.0
ALLOWED_FRACTION = 0.10


async def soak(args: argparse.Namespace, http_url: str, nats: Any, bridge: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=300) as http:
        response = await http.post(
            f"{http_url}/chat/knowledge/documents",
            json={"collection": SOAK_COLLECTION, "documents": SOAK_DOCUMENTS},
        )
        response.raise_for_status()
    wav = await asyncio.to_thread(speak, SOAK_QUESTION)
    workload = Workload(
        SOAK_QUESTION, SOAK_COLLECTION, wav, llm_every=args.llm_every, voice_every=args.voice_every
    )
    async with SoakClient(http_url, nats_test_settings(nats.url), workload) as client:
        # Every kind a few times first: the model runtimes size their buffers then.
        warm = [o for i in range(3) for o in await every_kind_answered(client, 900_000 + 10 * i)]
        await run_soak(client, 20, args.clients, first_index=910_000, grace_s=0)
        pids = await asyncio.to_thread(stack_processes, {"nats-server": nats.pid})
        before = rss_mb(pids)
        memory_run = await run_soak(client, args.memory_requests, args.clients, grace_s=5)
        after = rss_mb(pids)

        every = args.fault_every
        faults = fault_schedule(every, bridge, nats)
        fault_run = await run_soak(
            client,
            args.requests,
            args.clients,
            faults=faults,
            duration_s=5 * every,
            grace_s=30,
            first_index=100_000,
        )
        recovered = await wait_until_answered(client, 300, first_index=200_000)
        afterwards = await every_kind_answered(client, first_index=300_000)
    memory = memory_growth(before, after, allowed_mb=ALLOWED_MB, allowed_fraction=ALLOWED_FRACTION)
    return {
        "bench": "soak",
        "clients": args.clients,
        "warm_up_answered": all(o.status == "answered" for o in warm),
        "memory_phase": phase(memory_run),
        "memory": memory,
        "memory_bound": f"{ALLOWED_MB:g} MB + {ALLOWED_FRACTION:.0%} of the size before",
        "fault_phase": phase(fault_run),
        "faults": [
            {"fault": f.name, "at_s": f.happened_at_s, "in_flight": f.in_flight, "what": f.result}
            for f in fault_run.faults
        ],
        "recovered": [(o.transport, o.kind, o.status) for o in recovered],
        "afterwards": [(o.transport, o.kind, o.status, round(o.latency_s, 1)) for o in afterwards],
    }


def phase(result: SoakResult) -> dict[str, Any]:
    return {
        "wall_s": result.wall_s,
        "rows": result.rows(),
        "failures": [vars(o) for o in result.failures()],
    }


def outcome_table(rows: list[dict[str, Any]]) -> str:
    headers = [
        "transport",
        "kind",
        "requests",
        "answered",
        "clear errors",
        "proxy 5xx",
        "not accepted",
        "lost",
        "duplicated",
        "p50 ms",
        "p99 ms",
    ]
    keys = [
        "transport",
        "kind",
        "requests",
        "answered",
        "clear_errors",
        "proxy_5xx",
        "not_accepted",
        "lost",
        "duplicated",
        "p50_ms",
        "p99_ms",
    ]
    body = [["" if r[k] is None else r[k] for k in keys] for r in rows]
    return markdown_table(headers, body, "llrrrrrrrrr")


def tables(result: dict[str, Any]) -> str:
    memory_rows = [
        [
            m["process"],
            m["before_mb"],
            m["after_mb"],
            m.get("delta_mb", ""),
            m.get("bound_mb", ""),
            "yes" if m["ok"] else "NO",
        ]
        for m in result["memory"]
    ]
    parts = [
        f"Fault phase ({result['fault_phase']['wall_s']} s):",
        outcome_table(result["fault_phase"]["rows"]),
        markdown_table(
            ["fault", "at s", "requests in flight", "what happened"],
            [
                [f["fault"], f["at_s"], _in_flight(f["in_flight"]), f["what"]]
                for f in result["faults"]
            ],
        ),
        f"Memory phase ({result['memory_phase']['wall_s']} s, no faults):",
        outcome_table(result["memory_phase"]["rows"]),
        f"Resident memory, MB (bound: {result['memory_bound']}):",
        markdown_table(
            ["process", "before", "after", "delta", "bound", "within"], memory_rows, "lrrrrl"
        ),
        "Afterwards: "
        + ", ".join(f"{t} {k}: {s} ({sec} s)" for t, k, s, sec in result["afterwards"]),
    ]
    return "\n\n".join(parts)


def _in_flight(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="requests of the fault phase")
    parser.add_argument("--memory-requests", type=int, default=1000, help="no-fault requests")
    parser.add_argument("--clients", type=int, default=8, help="requests in flight at most")
    parser.add_argument("--fault-every", type=float, default=45.0, help="seconds between faults")
    parser.add_argument("--llm-every", type=int, default=20, help="every n-th request uses the LLM")
    parser.add_argument("--voice-every", type=int, default=40, help="every n-th one is spoken")
    parser.add_argument("--json", type=Path, help="also write the result as JSON to this file")
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    args = parser.parse_args()

    # The LLM on a busy two-core machine: the handlers' model calls may take minutes.
    os.environ.setdefault("HTTP_TIMEOUT_S", "240")
    from aictl.apps import StackOptions, applications
    from pipeline_bridge import BridgeConfig, start_bridges, stop_bridges

    config = BridgeConfig(
        mode="at_least_once", namespace=f"soak-{uuid.uuid4().hex[:6]}", ack_wait_s=10
    )
    with tempfile.TemporaryDirectory() as data, platform_nats() as nats, local_serve() as url:
        # The bridge runs as an actor here (killing it is a fault), not as the bridge app.
        stack = StackOptions(
            milvus_uri=str(Path(data) / "milvus.db"), with_web=False, with_bridge=False
        )
        apps = applications(stack)
        deploy_apps(apps)
        (bridge,) = start_bridges(1, config, nats_test_settings(nats.url, nats_name="nats-bridge"))
        try:
            result = asyncio.run(soak(args, url, nats, bridge))
        finally:
            stop_bridges(config, count=1, timeout_s=30)
    table = tables(result)
    print_result(result, table)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.markdown:
        args.markdown.write_text(table + "\n")
    broken = [
        p["failures"] for p in (result["memory_phase"], result["fault_phase"]) if p["failures"]
    ]
    if broken or not all(m["ok"] for m in result["memory"]):
        raise SystemExit("lost or duplicated requests, or memory over its bound: see above")


if __name__ == "__main__":
    main()
