"""Chat latency by stage, and the platform's own share measured against model compute.

Deploys the cpu profile's embeddings, reranker and LLM apps and the chat handler (Milvus
Lite in a temporary folder) on a local Ray and ingests two corpora through the knowledge
API: the sample knowledge base ``aictl up`` ingests (its own collection) and six short
product documents.

Answer quality: each question of the labelled set (``aictl.evaluation.EVAL_SET``) is
asked once over the sample knowledge base (temperature 0, one at a time); an answer is
right when it states the question's fact (``answer_contains``). Per question it also
tells whether the relevant document was among the sources and whether the fact was in the
passages the LLM got, so a wrong answer is blamed on retrieval (the fact never reached
the prompt) or on generation (it did, and the answer missed it).

Latency: questions about the products over HTTP (``POST /chat``) at 1, 4 and 16
concurrent clients,
the levels taking turns for ``--repeat`` rounds so that load drifts hit each alike. Each
answer reports its stage times (``timings_ms``) and the model compute measured inside
each model replica (``embed_model``, ``rerank_model``, ``generate_model``); the
platform's share is the handler's total minus that compute (hops, queues in front of the
models, the search, prompt building), and the transport is what the client waited beyond
the handler's total (Serve's proxy, JSON).

Run: ``.venv/bin/python bench/chat.py -n 8 --repeat 2`` (``--quick``: about two minutes).
"""

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from _common import deploy_model_app, local_serve, markdown_table, percentile, print_result

STAGES = ("embed", "search", "rerank", "generate")
MODEL_STAGES = ("embed_model", "rerank_model", "generate_model")
"""Model compute inside the replicas, of the embed, rerank and generate stages."""
PRODUCTS = [
    ("ZX-41", "flux capacitor", "teal", 417),
    ("QB-7", "harmonic resonator", "amber", 129),
    ("LM-88", "plasma coupler", "violet", 2310),
    ("TR-3", "quantum gasket", "ochre", 58),
    ("VK-12", "ion diffuser", "crimson", 774),
    ("PX-90", "graviton valve", "slate", 1999),
]


def corpus() -> list[dict[str, Any]]:
    return [
        {
            "id": code.lower(),
            "text": (
                f"The {code} {name} is a product of Acme Orbital. It ships in {colour} and "
                f"costs {price} euros. The {code} is serviced every 90 days."
            ),
            "metadata": {"title": f"{code} {name}"},
        }
        for code, name, colour, price in PRODUCTS
    ]


def questions(n: int) -> list[str]:
    return [f"How much does the {PRODUCTS[i % len(PRODUCTS)][0]} cost?" for i in range(n)]


async def ask(client: httpx.AsyncClient, query: str, collection: str = "bench") -> dict[str, Any]:
    """The ChatResponse and ``client_ms``; on an error status, only ``error`` (the status).

    A busy machine can push an answer past the chat handler's 60 s model deadline (504):
    that is counted, not fatal to the run.
    """
    start = time.perf_counter()
    response = await client.post("/chat", json={"query": query, "collection": collection})
    if response.status_code != 200:
        return {"error": response.status_code}
    body: dict[str, Any] = response.json()
    body["client_ms"] = (time.perf_counter() - start) * 1000
    return body


async def round_of(base_url: str, n: int, concurrency: int) -> tuple[list[dict[str, Any]], float]:
    """``n`` questions from ``concurrency`` clients: the answers and the wall time (s)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        await ask(client, "Warm up: what is the QB-7?")
        pending = questions(n)
        answers: list[dict[str, Any]] = []
        start = time.perf_counter()

        async def worker() -> None:
            while pending:
                answers.append(await ask(client, pending.pop()))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return answers, time.perf_counter() - start


async def answer_quality(base_url: str, collection: str) -> dict[str, Any]:
    """Each labelled question asked once over ``collection``: the rate of right answers.

    Per question: the fact stated (``answered``), the relevant document among the sources
    (``retrieved``) and its place there (``rank``, 1 = first), the fact in the passages
    the LLM got (``in_context``), and the stage that failed a wrong answer (``retrieval``
    or ``generation``; ``HTTP <status>`` when the chat handler answered an error).
    """
    from aictl.evaluation import EVAL_SET, answer_contains

    cases: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        await ask(client, "Warm up: what does Skylark Robotics make?", collection)
        for case in EVAL_SET:
            body = await ask(client, case.question, collection)
            sources = body.get("sources", [])
            documents = [s["metadata"].get("doc_id") for s in sources]
            answered = answer_contains(body.get("response", ""), case.facts)
            in_context = any(answer_contains(s["text"], case.facts) for s in sources)
            if "error" in body:
                failed_at = f"HTTP {body['error']}"
            else:
                failed_at = "generation" if in_context else "retrieval"
            cases.append(
                {
                    "question": case.question,
                    "facts": list(case.facts),
                    "answer": body.get("response"),
                    "answered": answered,
                    "retrieved": case.relevant_doc in documents,
                    "rank": documents.index(case.relevant_doc) + 1
                    if case.relevant_doc in documents
                    else None,
                    "in_context": in_context,
                    "failed_at": None if answered else failed_at,
                }
            )
    n = len(cases)
    return {
        "questions": n,
        "answer_rate": round(sum(c["answered"] for c in cases) / n, 4),
        "retrieved_rate": round(sum(c["retrieved"] for c in cases) / n, 4),
        "in_context_rate": round(sum(c["in_context"] for c in cases) / n, 4),
        "cases": cases,
    }


def quality_table(quality: dict[str, Any]) -> str:
    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    rows = [
        [
            c["question"],
            yes(c["answered"]),
            yes(c["retrieved"]),
            c["rank"] or "-",
            yes(c["in_context"]),
            c["failed_at"] or "",
        ]
        for c in quality["cases"]
    ]
    rows.append(
        [
            f"**rate (n = {quality['questions']})**",
            f"{quality['answer_rate']:.0%}",
            f"{quality['retrieved_rate']:.0%}",
            "",
            f"{quality['in_context_rate']:.0%}",
            "",
        ]
    )
    headers = [
        "question",
        "fact in answer",
        "relevant document in sources",
        "its rank",
        "fact in the LLM's passages",
        "failed at",
    ]
    return markdown_table(headers, rows, align="lrrrrl")


def summarize_level(concurrency: int, replies: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    """p50 and p99 of each stage, the model compute and the platform's share (of answers)."""
    answers = [a for a in replies if "error" not in a]
    summary: dict[str, Any] = {
        "concurrency": concurrency,
        "requests": len(answers),
        "errors": [a["error"] for a in replies if "error" in a],
        "answers_per_s": round(len(answers) / wall, 2),
    }
    if not answers:
        return summary
    for stage in (*STAGES, *MODEL_STAGES, "total"):
        values = [a["timings_ms"].get(stage) or 0.0 for a in answers]
        summary[stage] = {
            "p50": round(statistics.median(values), 1),
            "p99": round(percentile(values, 99), 1),
        }
    platform = [
        a["timings_ms"]["total"] - sum(a["timings_ms"].get(s) or 0.0 for s in MODEL_STAGES)
        for a in answers
    ]
    transport = [a["client_ms"] - a["timings_ms"]["total"] for a in answers]
    client = [a["client_ms"] for a in answers]
    summary["platform"] = {
        "p50": round(statistics.median(platform), 1),
        "p99": round(percentile(platform, 99), 1),
    }
    summary["transport"] = {
        "p50": round(statistics.median(transport), 1),
        "p99": round(percentile(transport, 99), 1),
    }
    summary["client"] = {
        "p50": round(statistics.median(client), 1),
        "p99": round(percentile(client, 99), 1),
    }
    summary["platform_share_of_client_p50"] = round(
        (summary["platform"]["p50"] + summary["transport"]["p50"]) / summary["client"]["p50"], 4
    )
    summary["platform_share_of_total_p50"] = round(
        statistics.median(
            p / a["timings_ms"]["total"] for p, a in zip(platform, answers, strict=True)
        ),
        4,
    )
    return summary


async def levels(
    base_url: str, n: int, concurrency: list[int], repeat: int
) -> list[dict[str, Any]]:
    """Every level ``repeat`` times, taking turns; each level's answers pooled."""
    answers: dict[int, list[dict[str, Any]]] = {c: [] for c in concurrency}
    wall: dict[int, float] = dict.fromkeys(concurrency, 0.0)
    for _ in range(repeat):
        for c in concurrency:
            got, seconds = await round_of(base_url, n, c)
            answers[c].extend(got)
            wall[c] += seconds
    return [summarize_level(c, answers[c], wall[c]) for c in concurrency]


def table(rounds: list[dict[str, Any]]) -> str:
    columns = [*STAGES, *MODEL_STAGES, "total", "platform", "transport", "client"]
    rows = []
    for r in (r for r in rounds if r["requests"]):
        rows.append([f"{r['concurrency']} client(s), p50", *(r[c]["p50"] for c in columns)])
        rows.append([f"{r['concurrency']} client(s), p99", *(r[c]["p99"] for c in columns)])
    main = markdown_table(["ms", *columns], rows, align="l" + "r" * len(columns))
    shares = markdown_table(
        [
            "clients",
            "n",
            "platform share of handler total (p50)",
            "platform + transport share of client p50",
            "answers/s",
            "errors",
        ],
        [
            [
                r["concurrency"],
                r["requests"],
                f"{r.get('platform_share_of_total_p50', 0):.1%}",
                f"{r.get('platform_share_of_client_p50', 0):.1%}",
                r["answers_per_s"],
                ", ".join(map(str, r["errors"])) or "none",
            ]
            for r in rounds
        ],
        align="lrrrrl",
    )
    return f"{main}\n\n{shares}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, default=8, help="questions per round")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--repeat", type=int, default=2, help="rounds of every level, in turns")
    parser.add_argument("--quick", action="store_true", help="-n 4, one round of 1 and 4")
    parser.add_argument("--quality-only", action="store_true", help="the answer quality only")
    args = parser.parse_args()
    if args.quick:
        args.n, args.concurrency, args.repeat = 4, [1, 4], 1

    from ray import serve

    from aictl.local import SAMPLE_COLLECTION, sample_documents
    from chat_handler import build_app as build_chat
    from ray_inference.embeddings import build_app as build_embeddings
    from ray_inference.llm import build_app as build_llm
    from ray_inference.reranker import build_app as build_reranker

    with tempfile.TemporaryDirectory() as data, local_serve() as base_url:
        deploy_model_app(build_embeddings({"profile": "cpu"}), "embeddings")
        deploy_model_app(build_reranker({"profile": "cpu"}), "reranker")
        deploy_model_app(build_llm({"profile": "cpu"}), "llm")
        milvus = str(Path(data) / "milvus.db")
        serve.run(build_chat({"milvus_uri": milvus}), name="chat", route_prefix="/chat")
        for collection, documents in ((SAMPLE_COLLECTION, sample_documents()), ("bench", corpus())):
            httpx.post(
                f"{base_url}/chat/knowledge/documents",
                json={"collection": collection, "documents": documents},
                timeout=300,
            ).raise_for_status()
        quality = asyncio.run(answer_quality(base_url, SAMPLE_COLLECTION))
        rounds = []
        if not args.quality_only:
            rounds = asyncio.run(levels(base_url, args.n, args.concurrency, args.repeat))
    tables = [quality_table(quality), *([table(rounds)] if rounds else [])]
    print_result({"bench": "chat", "quality": quality, "rounds": rounds}, "\n\n".join(tables))


if __name__ == "__main__":
    main()
