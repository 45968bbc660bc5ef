"""Answer quality of each cpu LLM and each grounding lever, on the answer set, in one run.

Deploys the cpu profile's embeddings and reranker apps and the chat handler (the
in-memory store: the same exact cosine search as Milvus Lite, no database file) on a
local Ray, ingests the answer set (``aictl.evaluation.answer_set``: 10 documents with
distractors, fact questions, follow-ups with their history, questions no document
answers), then for each LLM of ``--models`` deploys it as the ``llm`` app and, for each
variant of ``--variants``, the chat app with those ``rag`` settings, and asks every
question through ``POST /chat``, one at a time, judged by ``aictl eval``'s checker.

Variants: ``plain`` (the shipped pipeline), ``check`` (the answerability check on),
``floor=X`` (a relevance floor). The figures: facts right, follow-ups right, refusals
right, invented answers, answerable questions refused, valid citations, looping
answers, and the wall time of each answer (p50/p95). Quality does not depend on the
machine's load; the times do: run alone (``uptime``) for times you will quote.

Run: ``.venv/bin/python bench/answers.py --models qwen2.5-0.5b qwen2.5-1.5b
--variants plain check``, or ``--runs MODEL:VARIANT ...`` (``--limit N``: the first N
questions of each kind; ``--quick``: the default model, 2 of each kind).
"""

import argparse
import asyncio
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from _common import deploy_model_app, local_serve, markdown_table, print_result

RESULTS = Path(__file__).parent / "results"


def variant_rag(variant: str) -> dict[str, Any]:
    """The chat app's ``rag`` arguments of a variant name."""
    if variant == "plain":
        return {}
    if variant == "check":
        return {"answer_check": True}
    if variant.startswith("floor="):
        return {"min_score": float(variant.removeprefix("floor="))}
    raise SystemExit(f"unknown variant {variant!r}: plain, check or floor=X")


async def run_set(base: str, limit: int | None) -> list[Any]:
    from aictl.evaluation.run_answers import ask_all, ensure_answer_collection, select_cases
    from handler_base.clients import ChatClient, KnowledgeClient
    from handler_base.settings import Settings

    settings = Settings().model_copy(update={"http_timeout_s": 600.0})
    async with KnowledgeClient(settings, mode="http", base_url=f"{base}/chat") as knowledge:
        await ensure_answer_collection(knowledge, print)
    async with ChatClient(settings, mode="http", base_url=f"{base}/chat") as chat:
        return await ask_all(
            chat.chat,
            select_cases(limit),
            on_result=lambda r: print(f"  {r.verdict:9s} {r.time_s or 0:5.1f} s  {r.question}"),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["qwen2.5-0.5b", "qwen2.5-1.5b"])
    parser.add_argument("--variants", nargs="+", default=["plain", "check"])
    parser.add_argument(
        "--runs",
        nargs="+",
        default=None,
        help="MODEL:VARIANT pairs, in place of every model with every variant",
    )
    parser.add_argument("--limit", type=int, default=None, help="questions of each kind")
    parser.add_argument("--quick", action="store_true", help="SmolLM2, plain, 2 of each kind")
    parser.add_argument("--output", type=Path, default=None, help="the JSON (bench/results/)")
    args = parser.parse_args()
    if args.quick:
        from ray_inference.llm_models import DEFAULT_LLM_MODEL

        args.runs, args.limit = [f"{DEFAULT_LLM_MODEL}:plain"], 2
    pairs = (
        [(run.split(":", 1)[0], run.split(":", 1)[1]) for run in args.runs]
        if args.runs
        else [(model, variant) for model in args.models for variant in args.variants]
    )

    from ray import serve

    from aictl.evaluation.run_answers import summarize
    from chat_handler import build_app as build_chat
    from ray_inference.embeddings import build_app as build_embeddings
    from ray_inference.llm import build_app as build_llm
    from ray_inference.reranker import build_app as build_reranker

    runs: list[dict[str, Any]] = []
    with local_serve() as base:
        deploy_model_app(build_embeddings({"profile": "cpu"}), "embeddings")
        deploy_model_app(build_reranker({"profile": "cpu"}), "reranker")
        serve.run(build_chat({"store": "memory"}), name="chat", route_prefix="/chat")
        deployed = None
        for model, variant in pairs:
            if model != deployed:
                llm = build_llm({"profile": "cpu", "model": model})
                if deployed is None:
                    deploy_model_app(llm, "llm")  # attached (bench/quick.py): the shared one
                else:  # each model replaces the last under the one name
                    serve.run(llm, name="llm", route_prefix="/llm")
                deployed = model
            chat_args = {"store": "memory", "rag": variant_rag(variant)}
            serve.run(build_chat(chat_args), name="chat", route_prefix="/chat")
            print(f"==> {model}, {variant}", flush=True)
            start = time.perf_counter()
            results = asyncio.run(run_set(base, args.limit))
            runs.append(
                {
                    "model": model,
                    "variant": variant,
                    "wall_s": round(time.perf_counter() - start, 1),
                    "summary": dataclasses.asdict(summarize(results)),
                    "results": [r.model_dump(mode="json") for r in results],
                }
            )
    rows = [
        [
            run["model"],
            run["variant"],
            *(cell(run["summary"], key) for key in SUMMARY_COLUMNS),
        ]
        for run in runs
    ]
    result = {
        "bench": "answers",
        "limit": args.limit,
        "runs": [{k: v for k, v in run.items() if k != "results"} for run in runs],
    }
    dated = RESULTS / f"answers-{time.strftime('%Y-%m-%d')}.json"
    output = args.output or (None if args.quick else dated)
    if output is not None:
        output.write_text(json.dumps({**result, "runs": runs}, indent=1) + "\n")
    print_result(result, markdown_table(["model", "variant", *SUMMARY_COLUMNS], rows))


SUMMARY_COLUMNS = {
    "facts_right": "facts",
    "follow_ups_right": "follow_ups",
    "refusals_right": "unanswerable",
    "invented": "unanswerable",
    "answerable_refused": None,
    "citations_valid": "answered",
    "looping": "answered",
    "p50_s": None,
    "p95_s": None,
}
"""The table's columns: a count and what it is counted of (None: the figure alone)."""


def cell(summary: dict[str, Any], key: str) -> str:
    """One figure of a run's summary, as ``count/of`` or seconds."""
    value, of = summary[key], SUMMARY_COLUMNS[key]
    if value is None:
        return "-"
    if key.endswith("_s"):
        return f"{value:.1f}"
    return f"{value}/{summary[of]}" if of else str(value)


if __name__ == "__main__":
    main()
