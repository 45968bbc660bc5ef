"""``aictl eval``'s retrieval part against a knowledge base stand-in (no platform)."""

import io
from collections.abc import Mapping
from typing import Any

import pytest
from rich.console import Console

from aictl.evaluation import COLLECTION, RETRIEVAL_SET, corpus
from aictl.evaluation.answer_set import ANSWERS_COLLECTION, answer_documents
from aictl.evaluation.python_reference_terms import TERMS_SET
from aictl.evaluation.run_retrieval import (
    SingleDocumentCase,
    compare,
    evaluate_retrieval,
    retrieval_table,
)
from handler_base.knowledge import (
    CollectionsResponse,
    CollectionSummary,
    DeleteResponse,
    IngestRequest,
    IngestResponse,
    SearchRequest,
    SearchResponse,
)
from handler_base.messages import DEFAULT_TOP_K, Source
from handler_base.rag.documents import chunk_document


def source(doc_id: str, **metadata: Any) -> Source:
    return Source(id=doc_id, text="t", score=0.5, metadata={"doc_id": doc_id, **metadata})


class Knowledge:
    """Every collection already holds its documents; the search puts a wrong document first
    and the relevant one second, and ``rerank`` puts the relevant one first."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.searches: list[dict[str, Any]] = []

    async def collections(self) -> CollectionsResponse:
        counts = {
            COLLECTION: sum(len(chunk_document(d)) for d in corpus()),
            ANSWERS_COLLECTION: sum(len(chunk_document(d)) for d in answer_documents()),
            "default": 3,
        }
        return CollectionsResponse(
            collections=[CollectionSummary(name=n, count=c) for n, c in counts.items()]
        )

    async def search(self, request: SearchRequest | Mapping[str, Any]) -> SearchResponse:
        body = SearchRequest.model_validate(request)
        if body.filter is not None:  # the answer set's check for stale passages
            return SearchResponse(results=[])
        self.searches.append(body.model_dump())
        relevant = self.answers[body.query]
        if body.rerank:
            return SearchResponse(
                results=[source(relevant, reranked=True), source("wrong", reranked=True)]
            )
        return SearchResponse(results=[source("wrong"), source(relevant)])

    async def ingest(self, request: IngestRequest | Mapping[str, Any]) -> IngestResponse:
        raise AssertionError("nothing to ingest: every collection is there")

    async def delete_document(self, doc_id: str, collection: str = "default") -> DeleteResponse:
        raise AssertionError("nothing stale to delete")


def test_compare_scores_both_methods_and_the_paired_interval() -> None:
    cases = [SingleDocumentCase(f"q{i}", "a") for i in range(20)]
    dense = [["b", "a"]] * 20  # the relevant document second: nDCG 1/log2(3)
    pipeline = [["a", "b"]] * 20  # first: 1
    result = compare("set", cases, dense, pipeline)
    assert result.dense.ndcg == pytest.approx(0.63093, abs=1e-5)
    assert result.pipeline.ndcg == 1.0
    assert result.dense.recall == result.pipeline.recall == 1.0
    assert result.versus_dense.mean == pytest.approx(1 - 0.63093, abs=1e-5)
    assert result.versus_dense.verdict == "better"
    same = compare("set", cases, dense, dense)
    assert same.versus_dense.verdict == "tie"
    with pytest.raises(ValueError, match="no questions"):
        compare("empty", [], [], [])


async def test_every_set_is_searched_as_dense_and_as_the_pipeline() -> None:
    from aictl.evaluation.answer_set import FACT_QUESTIONS, FOLLOW_UPS
    from aictl.evaluation.sets import EVAL_SET

    def first(relevance: Mapping[str, int]) -> str:
        return max(relevance, key=lambda doc: relevance[doc])

    answers = {c.question: first(c.relevance) for c in (*RETRIEVAL_SET, *TERMS_SET)}
    answers |= {c.question: c.relevant_doc for c in FACT_QUESTIONS}
    answers |= {c.question: c.relevant_doc for c in EVAL_SET}
    answers |= {c.standalone: c.relevant_doc for c in FOLLOW_UPS}
    knowledge = Knowledge(answers)
    output = io.StringIO()
    console = Console(file=output, width=200)

    results = await evaluate_retrieval(
        knowledge, console, limit=3, candidates=50, sample_collection="default"
    )

    assert [r.name for r in results] == [
        "Python reference, as users ask",
        "Python reference, in its own terms",
        "answer set",
        "sample",
    ]
    assert all(r.dense.n == 3 and r.not_reranked == 0 for r in results)
    assert all(r.pipeline.ndcg > r.dense.ndcg for r in results)
    # each question twice, the second time reranked
    assert len(knowledge.searches) == 4 * 3 * 2
    # dense with --candidates passages, the pipeline with the chat's default top_k
    assert [(s["top_k"], s["rerank"]) for s in knowledge.searches[:2]] == [
        (50, False),
        (DEFAULT_TOP_K, True),
    ]
    assert {s["top_k"] for s in knowledge.searches} == {50, DEFAULT_TOP_K}
    assert knowledge.searches[0]["collection"] == COLLECTION
    console.print(retrieval_table(results, 50))
    text = output.getvalue()
    assert "Python reference, in its own terms" in text
    assert "better" in text or "tie" in text
