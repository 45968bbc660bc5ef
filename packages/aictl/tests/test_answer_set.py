"""The answer set is well-formed, checked against its own documents; and the pieces of its
run (asking, judging, the figures, the report) work with a fake chat. No cluster."""

import asyncio
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from aictl.evaluation.answer_check import canonical, canonical_tokens, states_fact
from aictl.evaluation.answer_set import (
    ANSWERS_COLLECTION,
    FACT_QUESTIONS,
    FOLLOW_UPS,
    SET_HASH_KEY,
    UNANSWERABLE,
    AnswerCase,
    FollowUp,
    Unanswerable,
    all_cases,
    answer_documents,
    answer_set_hash,
)
from aictl.evaluation.run_answers import (
    AnswerResult,
    answers_table,
    ask_all,
    ensure_answer_collection,
    percentile,
    report_of,
    request_for,
    select_cases,
    summarize,
    write_report,
)
from chat_handler.rag.pipeline import RAGConfig, RAGPipeline, document_filter
from chat_handler.stores.memory import InMemoryStore
from handler_base.errors import RequestTimeoutError, UnavailableError
from handler_base.knowledge import (
    CollectionsResponse,
    DeleteResponse,
    IngestRequest,
    IngestResponse,
    SearchRequest,
    SearchResponse,
)
from handler_base.messages import ChatRequest, ChatResponse, Source
from handler_base.rag.documents import chunk_document
from handler_base.settings import Settings

DOCUMENTS = {document.id: document for document in answer_documents()}


def _holds(text: str, term: str) -> bool:
    """Whether ``term`` is in ``text`` as whole tokens, both in the checker's normal form."""
    words, needle = canonical_tokens(text).words, canonical_tokens(term).words
    assert needle, term
    return any(words[i : i + len(needle)] == needle for i in range(len(words)))


def test_the_set_has_its_sizes() -> None:
    assert len(DOCUMENTS) >= 8
    assert len(FACT_QUESTIONS) >= 40
    assert len(FOLLOW_UPS) >= 10
    assert len(UNANSWERABLE) >= 10
    questions = [case.question for case in all_cases()]
    assert len(set(questions)) == len(questions)


@pytest.mark.parametrize("doc_id", sorted(DOCUMENTS))
def test_each_document_is_several_chunks_long(doc_id: str) -> None:
    document = DOCUMENTS[doc_id]
    assert 2000 <= len(document.text) <= 4000
    assert len(chunk_document(document)) >= 3
    assert document.title
    assert document.metadata["title"] == document.title
    assert document.metadata[SET_HASH_KEY] == answer_set_hash()


def test_every_document_is_asked_about() -> None:
    asked = {c.relevant_doc for c in FACT_QUESTIONS} | {c.relevant_doc for c in FOLLOW_UPS}
    assert asked == set(DOCUMENTS)


@pytest.mark.parametrize("case", [*FACT_QUESTIONS, *FOLLOW_UPS], ids=lambda c: c.question)
def test_each_fact_is_in_its_relevant_document(case: AnswerCase) -> None:
    assert not isinstance(case, Unanswerable)
    assert case.relevant_doc in DOCUMENTS
    assert case.facts
    # The first form is the document's own; the others are ways an answer may put it.
    assert states_fact(DOCUMENTS[case.relevant_doc].text, case.facts[0])
    for fact in case.facts:
        for form in (fact,) if isinstance(fact, str) else fact:
            assert canonical(form), form


@pytest.mark.parametrize("case", FOLLOW_UPS, ids=lambda c: c.question)
def test_each_follow_up_needs_its_history_and_has_a_standalone_form(case: FollowUp) -> None:
    user, assistant = case.history
    assert user.strip()
    assert assistant.strip()
    assert case.standalone.strip()
    assert case.standalone != case.question
    assert _holds(user, case.subject)
    assert _holds(case.standalone, case.subject)
    assert not _holds(case.question, case.subject)
    # the history does not already give the answer away
    assert not any(states_fact(assistant, fact) for fact in case.facts)


@pytest.mark.parametrize("case", UNANSWERABLE, ids=lambda c: c.question)
def test_no_document_answers_an_unanswerable_question(case: Unanswerable) -> None:
    assert case.topic_doc in DOCUMENTS
    assert case.topic
    assert case.absent
    # on topic: the topic document holds the question's subject...
    for word in case.topic:
        assert _holds(case.question, word), word
        assert _holds(DOCUMENTS[case.topic_doc].text, word), word
    # ...but no document holds what an answer would have to say
    for word in case.absent:
        assert not [doc_id for doc_id, d in DOCUMENTS.items() if _holds(d.text, word)], word


def test_the_hash_follows_the_documents() -> None:
    assert answer_set_hash() == answer_set_hash()
    assert len(answer_set_hash()) == 16


def test_requests_carry_the_collection_and_a_follow_ups_history() -> None:
    follow_up = FOLLOW_UPS[0]
    request = request_for(follow_up)
    assert request.collection == ANSWERS_COLLECTION
    assert request.query == follow_up.question
    assert [(m.role, m.content) for m in request.history] == [
        ("user", follow_up.history[0]),
        ("assistant", follow_up.history[1]),
    ]
    assert request_for(FACT_QUESTIONS[0]).history == []


def test_select_cases_takes_the_first_of_each_kind() -> None:
    cases = select_cases(2)
    assert [c.kind for c in cases] == ["fact"] * 2 + ["follow_up"] * 2 + ["unanswerable"] * 2
    assert len(select_cases()) == len(all_cases())


def test_percentile_interpolates() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([float(i) for i in range(1, 21)], 95) == pytest.approx(19.05)


class FakeChat:
    """Answers each question as a script says; records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[ChatRequest] = []

    async def __call__(self, request: ChatRequest) -> ChatResponse:
        self.asked.append(request)
        source = Source(id="c1", text="...", score=0.9, metadata={"doc_id": "answers/x.md"})
        if request.query == FACT_QUESTIONS[0].question:  # right, with a valid citation
            return ChatResponse(response="The Trek 300 costs 449 euros [1].", sources=[source])
        if request.query == FACT_QUESTIONS[1].question:  # wrong, and cites a passage not given
            return ChatResponse(response="It holds 576 Wh [2].", sources=[source])
        if request.query == FACT_QUESTIONS[2].question:
            raise RequestTimeoutError("no answer in time")
        if request.query == FOLLOW_UPS[0].question:
            assert request.history, "a follow-up goes with its history"
            doc = {"doc_id": FOLLOW_UPS[0].relevant_doc}
            return ChatResponse.model_validate(
                {
                    "response": "It weighs 4.3 kg [1].",
                    "sources": [{"id": "c2", "text": "...", "score": 0.8, "metadata": doc}],
                    "timings_ms": {"embed": 5.0, "generate": 900.0, "total": 1000.0},
                }
            )
        if request.query == UNANSWERABLE[0].question:
            return ChatResponse(
                response="I couldn't find the answer to that in the knowledge base."
            )
        return ChatResponse(response="The captain is Jack Black. " * 3, sources=[source])


def test_a_run_with_a_fake_chat_is_judged_summed_up_and_reported(tmp_path: Path) -> None:
    cases: list[AnswerCase] = [*FACT_QUESTIONS[:3], FOLLOW_UPS[0], *UNANSWERABLE[:2]]
    chat = FakeChat()
    seen: list[AnswerResult] = []
    results = asyncio.run(ask_all(chat, cases, on_result=seen.append))
    assert seen == results
    assert [r.verdict for r in results] == [
        "right",
        "wrong",
        "error",
        "right",
        "refused",
        "invented",
    ]
    assert [r.question for r in results] == [c.question for c in cases]
    assert {request.collection for request in chat.asked} == {ANSWERS_COLLECTION}
    right, wrong, timeout, follow_up, refused, invented = results
    assert right.citations == [1]
    assert right.citations_valid
    assert wrong.citations == [2]
    assert not wrong.citations_valid
    assert timeout.error
    assert timeout.time_s is None
    assert timeout.answer is None
    assert follow_up.relevant_in_sources
    assert follow_up.standalone == FOLLOW_UPS[0].standalone
    assert follow_up.timings_ms["generate"] == 900.0
    assert refused.expected == "refusal"
    assert refused.refused
    assert invented.looping

    summary = summarize(results)
    assert (summary.facts_right, summary.facts) == (1, 3)
    assert (summary.follow_ups_right, summary.follow_ups) == (1, 1)
    assert (summary.refusals_right, summary.invented, summary.unanswerable) == (1, 1, 2)
    assert (summary.answered, summary.errors) == (5, 1)
    assert (summary.citations_valid, summary.cited, summary.looping) == (4, 3, 1)
    assert summary.relevant_in_sources == 1
    assert summary.p50_s is not None
    assert summary.p95_s is not None
    assert answers_table(summary).row_count >= 10

    report = report_of(results)
    path = tmp_path / "answers.json"
    write_report(report, path)
    written = json.loads(path.read_text())
    assert written["collection"] == ANSWERS_COLLECTION
    assert written["set_hash"] == answer_set_hash()
    assert written["summary"]["facts_right"] == 1
    first = written["results"][0]
    assert first["question"] == FACT_QUESTIONS[0].question
    assert first["kind"] == "fact"
    assert first["expected"] == ["€449"]
    assert first["verdict"] == "right"
    assert first["source_doc_ids"] == ["answers/x.md"]
    assert isinstance(first["time_s"], float)
    assert "timings_ms" in first
    assert report.summary_figures() == summary


def test_a_platform_that_stops_answering_stops_the_run() -> None:
    async def down(request: ChatRequest) -> ChatResponse:
        raise UnavailableError("connection refused")

    with pytest.raises(UnavailableError):
        asyncio.run(ask_all(down, FACT_QUESTIONS[:1]))


class FakeKnowledge:
    """The knowledge API over the real in-memory store and the pipeline's own ingest, with
    a toy embedding (no model): enough to test which chunks are kept and which replaced."""

    def __init__(self) -> None:
        self.store = InMemoryStore(Settings(embedding_dim=8))
        self.pipeline = RAGPipeline(
            cast(Any, ToyEmbeddings()), self.store, cast(Any, None), None, RAGConfig()
        )
        self.ingested = 0

    async def collections(self) -> CollectionsResponse:
        found = await self.store.collections()
        return CollectionsResponse.model_validate(
            {"collections": [{"name": c.name, "count": c.count} for c in found]}
        )

    async def search(self, request: SearchRequest | Mapping[str, Any]) -> SearchResponse:
        body = SearchRequest.model_validate(request)
        vector = await ToyEmbeddings().embed_one(body.query)
        found = await self.store.search(body.collection, vector, body.top_k, body.filter)
        return SearchResponse(results=found)

    async def ingest(self, request: IngestRequest | Mapping[str, Any]) -> IngestResponse:
        body = IngestRequest.model_validate(request)
        self.ingested += 1
        documents = [d.to_document() for d in body.documents]
        ids = await self.pipeline.ingest(body.collection, documents)
        return IngestResponse(
            collection=body.collection, ids=[d.id for d in documents], chunks=len(ids)
        )

    async def delete_document(self, doc_id: str, collection: str = "default") -> DeleteResponse:
        return DeleteResponse(
            deleted=await self.store.delete(collection, filter=document_filter(doc_id))
        )


class ToyEmbeddings:
    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [await self.embed_one(text) for text in texts]

    async def embed_one(self, text: str) -> list[float]:
        return [1.0 + (hash(text) >> shift) % 7 for shift in range(8)]


def test_the_collection_is_filled_once_and_refreshed_when_the_set_changes() -> None:
    knowledge = FakeKnowledge()
    said: list[str] = []
    expected = sum(len(chunk_document(d)) for d in answer_documents())

    async def scenario() -> None:
        # an older version of the set: one document changed, one since removed
        old = answer_documents()[:2]
        old[0] = old[0].model_copy(update={"text": old[0].text + "\n\nAn old paragraph."})
        old.append(old[1].model_copy(update={"id": "answers/removed.md"}))
        for document in old:
            document.metadata[SET_HASH_KEY] = "0123456789abcdef"
        await knowledge.pipeline.ingest(ANSWERS_COLLECTION, old)

        assert await ensure_answer_collection(knowledge, said.append) == expected
        assert knowledge.ingested == 1
        assert (await knowledge.store.count(ANSWERS_COLLECTION)) == expected
        everything = await knowledge.store.search(ANSWERS_COLLECTION, [1.0] * 8, top_k=100)
        assert {s.metadata[SET_HASH_KEY] for s in everything} == {answer_set_hash()}
        assert {s.metadata["doc_id"] for s in everything} == set(DOCUMENTS)

        # the second time it is there already
        assert await ensure_answer_collection(knowledge, said.append) == expected
        assert knowledge.ingested == 1
        assert "is in 'eval_answers'" in said[-1]

    asyncio.run(scenario())


def test_output_needs_the_answers(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from aictl.cli import app

    output = tmp_path / "answers.json"
    done = CliRunner().invoke(app, ["eval", "--no-answers", "--output", str(output)])
    assert done.exit_code == 1
    assert "--no-answers" in done.output
    assert not output.exists()


def test_the_cli_runs_the_set_prints_its_table_and_writes_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from aictl import cli
    from aictl.evaluation import run_answers

    knowledge = FakeKnowledge()
    chat = FakeChat()

    class Client:
        def __init__(self, target: object) -> None:
            self.target = target

        async def __aenter__(self) -> object:
            return self.target

        async def __aexit__(self, *exc: object) -> None:
            return None

    class FakeChatClient(Client):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(type("Chat", (), {"chat": staticmethod(chat)})())

    monkeypatch.setattr(run_answers, "KnowledgeClient", lambda *a, **k: Client(knowledge))
    monkeypatch.setattr(run_answers, "ChatClient", FakeChatClient)
    output = tmp_path / "answers.json"
    cli._evaluate_answers(Settings(), "http://127.0.0.1:1", 1, output)
    printed = capsys.readouterr().out
    assert "Adding the answer set" in printed
    assert "facts right" in printed
    assert "answer time p50 / p95" in printed
    written = json.loads(output.read_text())
    assert [r["kind"] for r in written["results"]] == ["fact", "follow_up", "unanswerable"]
    assert written["summary"]["facts_right"] == 1
