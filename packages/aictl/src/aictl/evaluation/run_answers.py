"""``aictl eval``'s answer set: ingest it, ask every question through ``/chat``, judge.

The pieces run without a cluster: :func:`ask_all` takes any ``ask`` coroutine (a
:class:`~handler_base.clients.ChatClient`'s ``chat`` in the CLI, a fake in the tests),
:func:`summarize` and :func:`answers_table` work on the results. :func:`evaluate_answers`
joins them to the running platform.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aictl.evaluation.answer_check import Fact, Verdict, judge_answer
from aictl.evaluation.answer_set import (
    ANSWERS_COLLECTION,
    FACT_QUESTIONS,
    FOLLOW_UPS,
    SET_HASH_KEY,
    UNANSWERABLE,
    AnswerCase,
    FollowUp,
    Kind,
    Unanswerable,
    answer_documents,
    answer_set_hash,
)
from handler_base.clients import ChatClient, KnowledgeClient
from handler_base.errors import ErrorCode, PlatformError
from handler_base.knowledge import (
    CollectionsResponse,
    DeleteResponse,
    IngestRequest,
    IngestResponse,
    SearchRequest,
    SearchResponse,
)
from handler_base.messages import ChatRequest, ChatResponse
from handler_base.rag.documents import chunk_document
from handler_base.settings import Settings

Ask = Callable[[ChatRequest], Awaitable[ChatResponse]]
"""Answers one ChatRequest (``ChatClient.chat``)."""

REFUSAL: Literal["refusal"] = "refusal"
"""What a question the documents cannot answer expects."""


class AnswerResult(BaseModel):
    """One question of the answer set, its answer and the checker's verdict.

    ``verdict`` is the checker's (:data:`~aictl.evaluation.answer_check.Verdict`), or
    ``error`` when no answer came (a timeout, a failed request: see ``error``).
    """

    question: str
    kind: Kind
    history: list[dict[str, str]] = Field(default_factory=list)
    standalone: str | None = None
    """A follow-up's standalone form, as the set records it."""
    expected: list[str | list[str]] | Literal["refusal"]
    """The accepted facts (any one; a list: all of it), or ``refusal``."""
    relevant_doc: str
    """The document that answers it (an unanswerable question's topic document)."""
    answer: str | None = None
    verdict: Verdict | Literal["error"]
    refused: bool = False
    citations: list[int] = Field(default_factory=list)
    citations_valid: bool = True
    looping: bool = False
    time_s: float | None = None
    """Wall time of the ``/chat`` call."""
    source_doc_ids: list[str] = Field(default_factory=list)
    relevant_in_sources: bool = False
    rewritten_query: str | None = None
    """The standalone question the pipeline searched for, when it rewrote a follow-up."""
    timings_ms: dict[str, Any] = Field(default_factory=dict)
    """The response's ``timings_ms``."""
    error: str | None = None


def _expected(case: AnswerCase) -> list[str | list[str]] | Literal["refusal"]:
    if isinstance(case, Unanswerable):
        return REFUSAL
    return [fact if isinstance(fact, str) else list(fact) for fact in case.facts]


def request_for(case: AnswerCase, collection: str = ANSWERS_COLLECTION) -> ChatRequest:
    """The ChatRequest that asks ``case`` (with its history for a follow-up)."""
    history = case.history_messages() if isinstance(case, FollowUp) else []
    return ChatRequest.model_validate(
        {"query": case.question, "collection": collection, "history": history}
    )


async def ask_one(ask: Ask, case: AnswerCase, collection: str = ANSWERS_COLLECTION) -> AnswerResult:
    """Ask one question and judge the answer.

    Raises:
        PlatformError: ``unavailable``: the platform does not answer (the run cannot go on).
            Any other error is recorded in the result as ``error``.
    """
    request = request_for(case, collection)
    relevant = case.topic_doc if isinstance(case, Unanswerable) else case.relevant_doc
    result = AnswerResult(
        question=case.question,
        kind=case.kind,
        history=[m.model_dump() for m in request.history],
        standalone=case.standalone if isinstance(case, FollowUp) else None,
        expected=_expected(case),
        relevant_doc=relevant,
        verdict="error",
    )
    start = time.perf_counter()
    try:
        response = await ask(request)
    except PlatformError as exc:
        if exc.code is ErrorCode.UNAVAILABLE:
            raise
        result.error = f"{exc.code}: {exc.message}"
        return result
    result.time_s = round(time.perf_counter() - start, 3)
    facts: Sequence[Fact] | None = None if isinstance(case, Unanswerable) else case.facts
    judgement = judge_answer(response.response, len(response.sources), facts)
    doc_ids = [str(source.metadata.get("doc_id")) for source in response.sources]
    dumped = response.model_dump()
    result.answer = response.response
    result.verdict = judgement.verdict
    result.refused = judgement.refused
    result.citations = list(judgement.citations)
    result.citations_valid = judgement.citations_valid
    result.looping = judgement.looping
    result.source_doc_ids = doc_ids
    result.relevant_in_sources = relevant in doc_ids
    result.rewritten_query = dumped.get("rewritten_query")
    result.timings_ms = dumped.get("timings_ms") or {}
    return result


async def ask_all(
    ask: Ask,
    cases: Sequence[AnswerCase],
    collection: str = ANSWERS_COLLECTION,
    on_result: Callable[[AnswerResult], None] | None = None,
) -> list[AnswerResult]:
    """Ask the questions one after another (timings stay those of one request at a time)."""
    results = []
    for case in cases:
        result = await ask_one(ask, case, collection)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0 to 100), interpolated linearly between the closest ranks.

    numpy's default method: for 20 values, p95 lies between the 19th and 20th.
    None for no values.
    """
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class AnswerSummary:
    """The answer set's figures (counts; the table shows the shares).

    Attributes:
        facts_right: Fact questions whose answer states a fact, of ``facts``.
        follow_ups_right: Follow-ups whose answer states a fact, of ``follow_ups``.
        refusals_right: Unanswerable questions refused, of ``unanswerable``.
        invented: Unanswerable questions answered without a refusal, of ``unanswerable``.
        answerable_refused: Fact questions and follow-ups refused without their fact.
        answered: Questions that got an answer (no error).
        citations_valid: Answers each of whose ``[n]`` names a source given, of ``answered``.
        cited: Answers that cite at least one passage.
        looping: Answers that repeat a phrase.
        relevant_in_sources: Fact questions and follow-ups whose document was among the
            sources, of ``facts + follow_ups``.
        errors: Questions without an answer.
        p50_s: Median wall time of a ``/chat`` call, in seconds.
        p95_s: Its 95th percentile.
    """

    facts_right: int
    facts: int
    follow_ups_right: int
    follow_ups: int
    refusals_right: int
    invented: int
    unanswerable: int
    answerable_refused: int
    answered: int
    citations_valid: int
    cited: int
    looping: int
    relevant_in_sources: int
    errors: int
    p50_s: float | None
    p95_s: float | None


def summarize(results: Sequence[AnswerResult]) -> AnswerSummary:
    """The figures of a run."""

    def count(kind: Kind, verdict: str | None = None) -> int:
        return sum(
            1 for r in results if r.kind == kind and (verdict is None or r.verdict == verdict)
        )

    answered = [r for r in results if r.verdict != "error"]
    answerable = [r for r in results if r.kind != "unanswerable"]
    times = [r.time_s for r in answered if r.time_s is not None]
    return AnswerSummary(
        facts_right=count("fact", "right"),
        facts=count("fact"),
        follow_ups_right=count("follow_up", "right"),
        follow_ups=count("follow_up"),
        refusals_right=count("unanswerable", "refused"),
        invented=count("unanswerable", "invented"),
        unanswerable=count("unanswerable"),
        answerable_refused=sum(1 for r in answerable if r.verdict == "refused"),
        answered=len(answered),
        citations_valid=sum(1 for r in answered if r.citations_valid),
        cited=sum(1 for r in answered if r.citations),
        looping=sum(1 for r in answered if r.looping),
        relevant_in_sources=sum(1 for r in answerable if r.relevant_in_sources),
        errors=len(results) - len(answered),
        p50_s=percentile(times, 50),
        p95_s=percentile(times, 95),
    )


class AnswerReport(BaseModel):
    """What ``aictl eval --output`` writes: the set, the figures, every question."""

    collection: str
    set_hash: str
    documents: int
    summary: dict[str, Any]
    """The fields of :class:`AnswerSummary`."""
    results: list[AnswerResult]

    def summary_figures(self) -> AnswerSummary:
        """The summary as an :class:`AnswerSummary`."""
        return AnswerSummary(**self.summary)


def report_of(
    results: Sequence[AnswerResult], collection: str = ANSWERS_COLLECTION
) -> AnswerReport:
    """The report of a run."""
    return AnswerReport(
        collection=collection,
        set_hash=answer_set_hash(),
        documents=len(answer_documents()),
        summary=asdict(summarize(results)),
        results=list(results),
    )


def write_report(report: AnswerReport, path: Path) -> None:
    """Write the report as JSON (indented, UTF-8)."""
    path.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")


def _share(part: int, whole: int) -> str:
    return f"{part}/{whole} ({part / whole:.0%})" if whole else "-"


def answers_table(summary: AnswerSummary, title: str = "Answers: the answer set") -> Table:
    """The figures as a table: one measure a row, the count and its share."""
    table = Table(title=title, title_justify="left")
    table.add_column("measure", justify="left")
    table.add_column("result", justify="right")
    s = summary
    answerable = s.facts + s.follow_ups
    rows = [
        ("facts right", _share(s.facts_right, s.facts)),
        ("follow-ups right", _share(s.follow_ups_right, s.follow_ups)),
        ("refusals right (cannot be answered)", _share(s.refusals_right, s.unanswerable)),
        ("invented answers (cannot be answered)", _share(s.invented, s.unanswerable)),
        ("refused though answerable", _share(s.answerable_refused, answerable)),
        ("citations valid (answers)", _share(s.citations_valid, s.answered)),
        ("answers citing a passage", _share(s.cited, s.answered)),
        ("looping answers", _share(s.looping, s.answered)),
        ("relevant document in sources", _share(s.relevant_in_sources, answerable)),
        (
            "answer time p50 / p95",
            "-" if s.p50_s is None or s.p95_s is None else f"{s.p50_s:.1f} s / {s.p95_s:.1f} s",
        ),
    ]
    if s.errors:
        rows.append(("no answer (errors, timeouts)", str(s.errors)))
    for measure, value in rows:
        table.add_row(measure, value)
    return table


def select_cases(limit: int | None = None) -> list[AnswerCase]:
    """The set's questions: the first ``limit`` of each kind, or all of them."""
    return [*FACT_QUESTIONS[:limit], *FOLLOW_UPS[:limit], *UNANSWERABLE[:limit]]


# --- against the running platform -----------------------------------------------------------


class KnowledgeApi(Protocol):
    """What the answer set needs of the knowledge base (:class:`KnowledgeClient` has it)."""

    async def collections(self) -> CollectionsResponse:
        """The collections and their chunk counts."""
        ...

    async def search(self, request: SearchRequest | Mapping[str, Any]) -> SearchResponse:
        """The passages nearest a query."""
        ...

    async def ingest(self, request: IngestRequest | Mapping[str, Any]) -> IngestResponse:
        """Chunk, embed and store documents."""
        ...

    async def delete_document(self, doc_id: str, collection: str = ...) -> DeleteResponse:
        """Delete every chunk of a document."""
        ...


def _not_this_set(set_hash: str) -> dict[str, Any]:
    return {"not": {"field": f"metadata.{SET_HASH_KEY}", "op": "eq", "value": set_hash}}


async def _stale_doc_ids(knowledge: KnowledgeApi, collection: str, set_hash: str) -> set[str]:
    found = await knowledge.search(
        {
            "query": "stale passages",
            "collection": collection,
            "top_k": 100,
            "filter": _not_this_set(set_hash),
        }
    )
    return {str(source.metadata.get("doc_id")) for source in found.results}


async def ensure_answer_collection(
    knowledge: KnowledgeApi,
    say: Callable[[str], None],
    collection: str = ANSWERS_COLLECTION,
) -> int:
    """Put the set's documents into ``collection`` unless they are there already.

    They are there when the collection holds as many chunks as the documents make and
    none from another version of the set (each chunk carries the set's hash in its
    metadata). Otherwise every document is ingested again (a chunk that did not change
    keeps its id and is only updated) and the documents of other versions are deleted.

    Returns:
        The number of passages in the collection.
    """
    documents = answer_documents()
    set_hash = answer_set_hash()
    chunks = sum(len(chunk_document(d)) for d in documents)
    present = {c.name: c.count for c in (await knowledge.collections()).collections}
    if present.get(collection) == chunks and not await _stale_doc_ids(
        knowledge, collection, set_hash
    ):
        say(f"The answer set is in '{collection}' ({chunks} passages, set {set_hash})")
        return chunks
    say(f"Adding the answer set ({len(documents)} documents, set {set_hash}) to '{collection}'")
    answer = await knowledge.ingest(
        {
            "collection": collection,
            "documents": [{"id": d.id, "text": d.text, "metadata": d.metadata} for d in documents],
        }
    )
    for _ in range(50):  # 100 stale passages a round
        stale = await _stale_doc_ids(knowledge, collection, set_hash)
        if not stale:
            break
        for doc_id in sorted(stale):
            await knowledge.delete_document(doc_id, collection)
    return answer.chunks


async def evaluate_answers(
    settings: Settings, base: str, console: Console, limit: int | None = None
) -> AnswerReport:
    """Run the answer set against the platform at ``base`` (the Serve proxy), with progress.

    Raises:
        PlatformError: The knowledge base failed, or the platform does not answer.
    """
    cases = select_cases(limit)
    async with KnowledgeClient(settings, mode="http", base_url=f"{base}/chat") as knowledge:
        await ensure_answer_collection(
            knowledge, lambda line: console.print(f"[bold]==>[/] {line}")
        )
    # An answer takes seconds on a CPU, and longer while other work shares the cores.
    patient = settings.model_copy(update={"http_timeout_s": max(settings.http_timeout_s, 600.0)})
    tally = {"right": 0, "wrong": 0, "refused": 0, "invented": 0, "error": 0}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    async with ChatClient(patient, mode="http", base_url=f"{base}/chat") as chat:
        with Progress(*columns, console=console) as progress:
            label = "Asking the answer set through /chat"
            task = progress.add_task(label, total=len(cases))

            def advance(result: AnswerResult) -> None:
                tally[result.verdict] += 1
                counts = ", ".join(f"{n} {verdict}" for verdict, n in tally.items() if n)
                progress.update(task, advance=1, description=f"{label} ({counts})")
                if result.error:
                    progress.console.print(
                        f"[yellow]No answer, counted as wrong:[/] {result.question} "
                        f"({result.error})"
                    )

            results = await ask_all(chat.chat, cases, on_result=advance)
    return report_of(results)
