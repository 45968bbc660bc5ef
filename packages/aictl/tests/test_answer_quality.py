"""Answer quality with the default LLM: questions of the answer set, asked for real.

The shared model apps serve SmolLM2 (tests of mechanics); this module deploys the cpu
profile's default LLM beside them under its own name, and asks it, through the chat's
RAG pipeline over the answer set's documents, a few questions of each kind the default is
measured to get right (BENCHMARKS.md, "Answer quality"). The whole set is measured by
``bench/answers.py`` and ``aictl eval``, not here: a CPU answers in seconds.
"""

from collections.abc import AsyncIterator, Sequence
from typing import TypeVar

import pytest
import pytest_asyncio
from ray import serve

from aictl.evaluation.answer_check import judge_answer
from aictl.evaluation.answer_set import (
    FACT_QUESTIONS,
    FOLLOW_UPS,
    FactQuestion,
    FollowUp,
    answer_documents,
)
from aictl.evaluation.run_answers import request_for
from chat_handler.rag import RAGPipeline
from chat_handler.stores import InMemoryStore
from handler_base.clients import EmbeddingsClient, LLMClient, RerankerClient
from handler_base.testing.platform import SharedApps
from ray_inference.llm import build_app as build_llm
from ray_inference.llm_models import DEFAULT_LLM_MODEL

pytestmark = pytest.mark.integration

APP = "llm_default"
COLLECTION = "answers"


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def pipeline(
    model_apps: SharedApps, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RAGPipeline]:
    data_dir = str(tmp_path_factory.mktemp("llm-data"))
    serve.run(
        build_llm({"profile": "cpu", "model": DEFAULT_LLM_MODEL, "data_dir": data_dir}),
        name=APP,
        route_prefix=f"/{APP}",
    )
    try:
        async with (
            EmbeddingsClient(mode="handle") as embedder,
            LLMClient(mode="handle", app_name=APP) as writer,
            RerankerClient(mode="handle") as ranker,
        ):
            rag = RAGPipeline(embedder, InMemoryStore(), writer, ranker)
            await rag.ingest(COLLECTION, answer_documents())
            yield rag
    finally:
        serve.delete(APP)


Case = TypeVar("Case", FactQuestion, FollowUp)


def by_question(cases: Sequence[Case], *questions: str) -> list[Case]:
    chosen = [case for case in cases if case.question in questions]
    assert len(chosen) == len(questions), "a question of this test left the answer set"
    return chosen


@pytest.mark.parametrize(
    "case",
    [
        *by_question(
            FACT_QUESTIONS,
            "How much does the Ambervolt Trek 300 cost?",
            "What is the battery capacity of the Trek 300 in watt-hours?",
        ),
        *by_question(FOLLOW_UPS, FOLLOW_UPS[0].question),
    ],
    ids=lambda case: case.question,
)
async def test_the_default_llm_answers_from_the_passages(
    pipeline: RAGPipeline, case: FactQuestion | FollowUp
) -> None:
    request = request_for(case, COLLECTION)
    response = await pipeline.answer(request)
    judgement = judge_answer(response.response, len(response.sources), case.facts)
    assert judgement.verdict == "right", (response.response, response.rewritten_query)
    assert judgement.citations_valid
    if request.history:
        assert response.rewritten_query
