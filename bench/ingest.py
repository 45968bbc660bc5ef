"""Ingest throughput (chunks/s): the knowledge API (batched, one document a request), the pipeline.

The cpu profile's embeddings app as main ships it and a chat app (Milvus Lite in a
temporary folder) on a local Ray, and a nats-server on loopback. Each round ingests the
same ``--documents`` texts (about 2,000 characters each, several chunks apiece) three
ways, one after the other (the ways interleaved round by round), each into its own
collection (same ids: a round replaces the previous round's chunks):

* ``api, all in one request``: one ``POST /chat/knowledge/documents`` with every document;
* ``api, one per request``: one request per document, in sequence;
* ``pipeline``: an ``ai.pipeline.trigger`` of ``document-ingestion`` with the texts inline,
  run by the local runner (kfp's subprocess runner: two steps, each a fresh Python
  process), timed from the trigger to its ``succeeded`` status event.

chunks/s = the chunks stored (the API's ``chunks``) / the wall time of the way.

Run: ``.venv/bin/python bench/ingest.py --documents 32 --rounds 3``; ``--quick``: 4
documents, 1 round.
"""

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from nats.aio.msg import Msg

from _common import deploy_model_app, local_serve, markdown_table, print_result
from handler_base.messaging import connect, flush
from handler_base.settings import Settings
from handler_base.testing.nats import NatsServer
from handler_base.testing.nats_fixtures import nats_test_settings

WAYS = ("api, all in one request", "api, one per request", "pipeline")
TOPICS = ["lighthouse", "ferry", "reactor", "orchard", "glacier", "harbour", "archive", "mill"]


def documents(count: int) -> list[dict[str, Any]]:
    """``count`` distinct texts of about 2,000 characters."""
    docs = []
    for i in range(count):
        topic = TOPICS[i % len(TOPICS)]
        sentences = [
            f"Item {i}-{j}: the {topic} number {i} logs reading {j * 17 % 101} at hour {j % 24}."
            for j in range(28)
        ]
        docs.append({"id": f"doc-{i}", "text": " ".join(sentences), "metadata": {"title": topic}})
    return docs


async def via_api(http: httpx.AsyncClient, docs: list[dict[str, Any]], batched: bool) -> int:
    collection = "bench_api_batched" if batched else "bench_api_single"
    bodies = [docs] if batched else [[doc] for doc in docs]
    chunks = 0
    for body in bodies:
        response = await http.post(
            "/knowledge/documents", json={"collection": collection, "documents": body}
        )
        response.raise_for_status()
        chunks += int(response.json()["chunks"])
    return chunks


async def via_pipeline(nats_url: str, docs: list[dict[str, Any]]) -> None:
    nc = await connect(nats_test_settings(nats_url, nats_name="bench-ingest"))
    ended: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def on_event(msg: Msg) -> None:
        data = json.loads(msg.data)["data"]
        if data["state"] in ("succeeded", "failed") and not ended.done():
            ended.set_result(data)

    try:
        await nc.subscribe("ai.pipeline.status.>", cb=on_event)
        await flush(nc)
        params = {"collection": "bench_pipeline", "documents": docs}
        body = {"pipeline": "document-ingestion", "params": params}
        reply = await nc.request("ai.pipeline.trigger", json.dumps(body).encode(), timeout=60)
        assert json.loads(reply.data)["state"] == "submitted", reply.data
        final = await asyncio.wait_for(ended, 900)
        assert final["state"] == "succeeded", final
    finally:
        await nc.close()


async def rounds(chat_url: str, nats_url: str, docs: list[dict[str, Any]], count: int) -> Any:
    from pipeline_bridge.pipelines import LocalRunner, PipelineService, PipelineServiceConfig

    rates: dict[str, list[float]] = {way: [] for way in WAYS}
    chunks = 0
    with tempfile.TemporaryDirectory(prefix="bench-ingest-runs-") as runs:
        service = PipelineService(
            LocalRunner(Path(runs)),
            settings=Settings(chat_url=chat_url),
            config=PipelineServiceConfig(poll_interval_s=0.2),
        )
        service_nc = await connect(nats_test_settings(nats_url, nats_name="bench-pipelines"))
        await service.start(service_nc)
        try:
            async with httpx.AsyncClient(base_url=chat_url, timeout=900) as http:
                await via_api(http, docs[:1], batched=True)  # warm-up: models loaded
                for _ in range(count):
                    for way in WAYS:
                        start = time.perf_counter()
                        if way == "pipeline":
                            await via_pipeline(nats_url, docs)
                        else:
                            chunks = await via_api(http, docs, batched=way == WAYS[0])
                        rates[way].append(chunks / (time.perf_counter() - start))
        finally:
            await service.stop()
            await service_nc.close()
    return chunks, rates


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--documents", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="4 documents, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.documents, args.rounds = 4, 1
    docs = documents(args.documents)

    from ray import serve

    from chat_handler.deployment import build_app as build_chat
    from ray_inference.embeddings import build_app as build_embeddings

    with (
        tempfile.TemporaryDirectory() as data,
        NatsServer(jetstream=False) as nats_server,
        local_serve() as base_url,
    ):
        deploy_model_app(build_embeddings({"profile": "cpu"}), "embeddings")
        milvus = str(Path(data) / "milvus.db")
        serve.run(build_chat({"milvus_uri": milvus}), name="chat", route_prefix="/chat")
        chunks, rates = asyncio.run(rounds(f"{base_url}/chat", nats_server.url, docs, args.rounds))
    summary = {
        way: {
            "runs": len(values),
            "median_chunks_per_s": round(statistics.median(values), 1),
            "all": [round(v, 1) for v in values],
        }
        for way, values in rates.items()
    }
    result = {"bench": "ingest", "documents": args.documents, "chunks": chunks, "ways": summary}
    rows = [
        [way, s["runs"], args.documents, chunks, s["median_chunks_per_s"], s["all"]]
        for way, s in summary.items()
    ]
    headers = ["ingest", "runs", "documents", "chunks", "median chunks/s", "each run"]
    print_result(result, markdown_table(headers, rows, "lrrrrl"))


if __name__ == "__main__":
    main()
