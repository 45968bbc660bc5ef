"""``aictl eval``'s retrieval part: the labelled sets searched on the running platform.

Each question is searched twice through ``POST /chat/knowledge/search``: in the vector
search's order with ``--candidates`` passages (dense alone, 50), and as the chat's
pipeline does it: the chat's default ``top_k`` (:data:`~handler_base.messages.DEFAULT_TOP_K`)
with ``rerank`` (its reranker over those passages, in the order it gives the LLM). Both
rankings are scored per document (a document ranks at its best passage; nDCG@10 and recall@10), and
the pipeline's nDCG@10 is compared with dense alone's question by question, by a paired
bootstrap interval (:mod:`aictl.evaluation.stats`).

The sets: the Python language reference asked as users ask and in its own terms (one
collection, :data:`~aictl.evaluation.COLLECTION`), the answer set's fact questions and
standalone follow-ups (its collection), and the sample knowledge base's 12 questions
(``default``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from aictl.evaluation.metrics import (
    RetrievalScores,
    document_ranking,
    ndcg_at_k,
    recall_at_k,
)
from aictl.evaluation.python_reference import COLLECTION, RETRIEVAL_SET, corpus
from aictl.evaluation.python_reference_terms import TERMS_SET
from aictl.evaluation.run_answers import KnowledgeApi, ensure_answer_collection
from aictl.evaluation.sets import EVAL_SET
from aictl.evaluation.stats import PairedInterval, paired_bootstrap
from handler_base.messages import DEFAULT_TOP_K
from handler_base.rag.documents import chunk_document

K = 10


class Case(Protocol):
    """A labelled question."""

    @property
    def question(self) -> str:
        """The question as searched."""
        ...

    @property
    def relevance(self) -> Mapping[str, int]:
        """The graded relevance of the documents that answer it."""
        ...


@dataclass(frozen=True)
class SingleDocumentCase:
    """A question one document answers (relevance 1, the others 0)."""

    question: str
    relevant_doc: str

    @property
    def relevance(self) -> dict[str, int]:
        """``{relevant_doc: 1}``."""
        return {self.relevant_doc: 1}


@dataclass(frozen=True)
class RetrievalSet:
    """A labelled set and the collection that holds its documents."""

    name: str
    collection: str
    cases: Sequence[Case]


@dataclass(frozen=True)
class RetrievalResult:
    """One set's figures: dense alone, the pipeline, and the pipeline's paired interval.

    Attributes:
        name: The set.
        dense: Dense alone (the vector search's order).
        pipeline: The chat's pipeline (the same passages, reranked).
        versus_dense: The pipeline's nDCG@10 minus dense alone's, per question.
        not_reranked: Questions whose passages came back in search order (the reranker
            was down or timed out).
    """

    name: str
    dense: RetrievalScores
    pipeline: RetrievalScores
    versus_dense: PairedInterval
    not_reranked: int = 0


def score(rankings: Sequence[Sequence[str]], cases: Sequence[Case]) -> list[tuple[float, float]]:
    """Each question's (nDCG@10, recall@10)."""
    return [
        (ndcg_at_k(r, c.relevance, K), recall_at_k(r, c.relevance, K))
        for r, c in zip(rankings, cases, strict=True)
    ]


def compare(
    name: str,
    cases: Sequence[Case],
    dense: Sequence[Sequence[str]],
    pipeline: Sequence[Sequence[str]],
    not_reranked: int = 0,
) -> RetrievalResult:
    """Score both methods' rankings of ``cases`` and the pipeline's interval against dense."""
    if not cases:
        raise ValueError(f"the set {name!r} has no questions")
    dense_scores, pipeline_scores = score(dense, cases), score(pipeline, cases)

    def mean(scores: list[tuple[float, float]]) -> RetrievalScores:
        n = len(scores)
        return RetrievalScores(
            ndcg=sum(s[0] for s in scores) / n, recall=sum(s[1] for s in scores) / n, n=n
        )

    interval = paired_bootstrap([s[0] for s in pipeline_scores], [s[0] for s in dense_scores])
    return RetrievalResult(name, mean(dense_scores), mean(pipeline_scores), interval, not_reranked)


def answer_set_cases() -> list[SingleDocumentCase]:
    """The answer set as a retrieval set, each question with its one document.

    Its fact questions, and its follow-ups in their standalone form (what retrieval is
    asked after the rewrite).
    """
    from aictl.evaluation.answer_set import FACT_QUESTIONS, FOLLOW_UPS

    cases = [SingleDocumentCase(c.question, c.relevant_doc) for c in FACT_QUESTIONS]
    return cases + [SingleDocumentCase(c.standalone, c.relevant_doc) for c in FOLLOW_UPS]


def retrieval_sets(limit: int | None, sample_collection: str) -> list[RetrievalSet]:
    """The sets ``aictl eval`` searches (the first ``limit`` questions of each)."""
    from aictl.evaluation.answer_set import ANSWERS_COLLECTION

    return [
        RetrievalSet("Python reference, as users ask", COLLECTION, RETRIEVAL_SET[:limit]),
        RetrievalSet("Python reference, in its own terms", COLLECTION, TERMS_SET[:limit]),
        RetrievalSet("answer set", ANSWERS_COLLECTION, answer_set_cases()[:limit]),
        RetrievalSet("sample", sample_collection, EVAL_SET[:limit]),
    ]


async def ensure_reference(knowledge: KnowledgeApi, console: Console) -> None:
    """Put the Python language reference into its collection unless it is there."""
    present = {c.name: c.count for c in (await knowledge.collections()).collections}
    documents = corpus()
    chunks = sum(len(chunk_document(d)) for d in documents)
    if present.get(COLLECTION) == chunks:
        console.print(
            f"[bold]==>[/] The Python language reference is in '{COLLECTION}' ({chunks} passages)"
        )
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(
            f"Adding the Python language reference to '{COLLECTION}'", total=len(documents)
        )
        for start in range(0, len(documents), 8):
            batch = documents[start : start + 8]
            await knowledge.ingest(
                {
                    "collection": COLLECTION,
                    "documents": [
                        {"id": d.id, "text": d.text, "metadata": d.metadata} for d in batch
                    ],
                }
            )
            progress.update(task, advance=len(batch))


async def search_both_ways(
    knowledge: KnowledgeApi,
    labelled: RetrievalSet,
    candidates: int,
    advance: Callable[[], None] = lambda: None,
    pipeline_top_k: int = DEFAULT_TOP_K,
) -> RetrievalResult:
    """Search each question of ``labelled`` as dense alone and as the pipeline; score both.

    Dense alone: ``candidates`` passages in the search's order; the pipeline:
    ``pipeline_top_k`` passages, reranked.
    """
    dense: list[list[str]] = []
    pipeline: list[list[str]] = []
    not_reranked = 0
    for case in labelled.cases:
        request = {"query": case.question, "collection": labelled.collection}
        found = await knowledge.search({**request, "top_k": candidates})
        dense.append(document_ranking(found.results))
        reranked = await knowledge.search({**request, "top_k": pipeline_top_k, "rerank": True})
        pipeline.append(document_ranking(reranked.results))
        if any(s.metadata.get("reranked") is False for s in reranked.results):
            not_reranked += 1
        advance()
    return compare(labelled.name, labelled.cases, dense, pipeline, not_reranked)


async def evaluate_retrieval(
    knowledge: KnowledgeApi,
    console: Console,
    *,
    limit: int | None,
    candidates: int,
    sample_collection: str,
    pipeline_top_k: int = DEFAULT_TOP_K,
) -> list[RetrievalResult]:
    """Search every set on the platform both ways, with progress; the figures of each.

    The Python reference and the answer set are ingested first when missing; the sample
    is expected in ``sample_collection`` already.

    Raises:
        PlatformError: The knowledge base failed, or the platform does not answer.
    """
    await ensure_reference(knowledge, console)
    await ensure_answer_collection(knowledge, lambda line: console.print(f"[bold]==>[/] {line}"))
    results = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    for labelled in retrieval_sets(limit, sample_collection):
        with Progress(*columns, console=console) as progress:
            task = progress.add_task(
                f"Searching: {labelled.name} (dense, then reranked)", total=len(labelled.cases)
            )
            result = await search_both_ways(
                knowledge,
                labelled,
                candidates,
                partial(progress.update, task, advance=1),
                pipeline_top_k,
            )
        if result.not_reranked:
            console.print(
                f"[yellow]The reranker did not answer for {result.not_reranked} of "
                f"{result.pipeline.n} questions of '{labelled.name}': those kept the search "
                "order.[/]"
            )
        results.append(result)
    return results


def retrieval_table(
    results: Sequence[RetrievalResult], candidates: int, pipeline_top_k: int = DEFAULT_TOP_K
) -> Table:
    """The figures of every set: dense alone, the pipeline, the pipeline's interval."""
    table = Table(
        title=f"Retrieval: dense alone ({candidates} passages) and the chat's pipeline "
        f"({pipeline_top_k} passages, reranked)",
        title_justify="left",
    )
    headers = (
        "set",
        "dense nDCG@10",
        "recall@10",
        "pipeline nDCG@10",
        "recall@10",
        "pipeline - dense [95% CI]",
        "n",
    )
    for header in headers:
        table.add_column(header, justify="left" if header == "set" else "right")
    for r in results:
        interval = r.versus_dense
        table.add_row(
            r.name,
            f"{r.dense.ndcg:.3f}",
            f"{r.dense.recall:.3f}",
            f"{r.pipeline.ndcg:.3f}",
            f"{r.pipeline.recall:.3f}",
            f"{interval} {interval.verdict}",
            str(r.dense.n),
        )
    return table
