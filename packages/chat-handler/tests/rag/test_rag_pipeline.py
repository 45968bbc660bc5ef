"""The RAG pipeline with the real models on the session's Ray cluster.

The pipeline reaches the session's embeddings, reranker and LLM apps (``model_apps``)
through handles. The knowledge base is Milvus Lite in this process (and the in-memory
store, for retrieval).
"""

import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from chat_handler.rag import (
    NO_SOURCES_ANSWER,
    NOT_FOUND_ANSWER,
    RERANKED_KEY,
    RAGConfig,
    RAGPipeline,
    document_filter,
)
from chat_handler.stores import InMemoryStore, MilvusStore
from chat_handler.testing import lite_settings
from handler_base.clients import EmbeddingsClient, LLMClient, RerankerClient
from handler_base.errors import InvalidRequestError, UnavailableError
from handler_base.messages import ChatRequest, ChatResponse, HistoryMessage
from handler_base.rag import Document, load_document
from handler_base.testing.platform import SharedApps

pytestmark = pytest.mark.integration

COLLECTION = "products"
FACT = "The ZX-41 flux capacitor ships in teal and costs 417 euros."
QUESTION = "How much does the ZX-41 flux capacitor cost?"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Document]:
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "zx41.md").write_text(
        "# ZX-41 flux capacitor\n\n"
        f"{FACT} It draws 3.5 kW at peak, e.g. during a cold start. "
        "Dr. Okafor designed its housing.\n"
    )
    (folder / "qp7.txt").write_text(
        "The QP-7 router blinks amber while its firmware updates. It weighs 2.3 kg. "
        "Its antennas fold flat for shipping."
    )
    (folder / "hours.txt").write_text(
        "The support desk opens at 9 in the morning and closes at 5 in the afternoon. "
        "It is closed on public holidays."
    )
    return [
        load_document(folder / name, doc_id=name.split(".")[0])
        for name in sorted(("zx41.md", "qp7.txt", "hours.txt"))
    ]


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def store(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MilvusStore]:
    client = MilvusStore(lite_settings(tmp_path_factory.mktemp("milvus")))
    try:
        yield client
    finally:
        client.close()


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def pipeline(
    model_apps: SharedApps, store: MilvusStore, corpus: list[Document]
) -> AsyncIterator[RAGPipeline]:
    async with (
        EmbeddingsClient(mode="handle") as embedder,
        LLMClient(mode="handle") as writer,
        RerankerClient(mode="handle") as ranker,
    ):
        # Greedy decoding (the default), so the streamed and the whole answer can be compared.
        rag = RAGPipeline(embedder, store, writer, ranker)
        await rag.ingest(COLLECTION, corpus)
        yield rag


async def test_the_answer_comes_from_the_passage_with_the_fact(pipeline: RAGPipeline) -> None:
    response = await pipeline.answer(
        ChatRequest(query=QUESTION, collection=COLLECTION, top_n=2, request_id="q-1")
    )
    assert response.request_id == "q-1"
    top = response.sources[0]
    assert FACT in top.text
    assert top.metadata["doc_id"] == "zx41"
    assert top.metadata["title"] == "ZX-41 flux capacitor"
    assert top.metadata[RERANKED_KEY] is True
    assert len(response.sources) <= 2
    # The 135M model is weak: it states the fact for this one-part question (greedy),
    # but rambles on a two-part one ("what colour and how much").
    assert "417" in response.response
    timings = response.timings_ms
    assert min(timings.embed, timings.search, timings.rerank, timings.generate) > 0
    assert timings.total >= timings.embed + timings.search + timings.rerank + timings.generate
    # The model compute each replica reported lies within its stage's span.
    for stage, model in (
        (timings.embed, timings.embed_model),
        (timings.rerank, timings.rerank_model),
        (timings.generate, timings.generate_model),
    ):
        assert model is not None
        assert 0 < model <= stage
    assert timings.platform is not None
    assert 0 < timings.platform < timings.total


async def test_the_stream_ends_with_the_whole_text_and_the_same_sources(
    pipeline: RAGPipeline,
) -> None:
    request = ChatRequest(query=QUESTION, collection=COLLECTION, top_n=2)
    whole = await pipeline.answer(request)
    items = [item async for item in pipeline.stream(request)]
    *pieces, last = items
    assert isinstance(last, ChatResponse)
    assert pieces
    assert all(isinstance(p, str) for p in pieces)
    assert last.response == "".join(str(p) for p in pieces)
    assert last.response == whole.response
    assert [s.id for s in last.sources] == [s.id for s in whole.sources]
    assert last.timings_ms.generate > 0
    streamed = last.timings_ms.generate_model
    assert streamed is not None
    assert 0 < streamed <= last.timings_ms.generate


async def test_ingesting_again_adds_nothing_and_a_changed_document_replaces_its_chunks(
    pipeline: RAGPipeline, store: MilvusStore, corpus: list[Document]
) -> None:
    before = await store.count(COLLECTION)
    await pipeline.ingest(COLLECTION, corpus)
    assert await store.count(COLLECTION) == before
    hours = next(d for d in corpus if d.id == "hours")
    changed = hours.model_copy(update={"text": "The support desk is open around the clock."})
    await pipeline.ingest(COLLECTION, [changed])
    assert await store.count(COLLECTION) == before
    found = await store.search(
        COLLECTION,
        await pipeline.embeddings.embed_one("support desk"),
        10,
        document_filter("hours"),
    )
    assert [s.text for s in found] == [changed.text]
    await pipeline.ingest(COLLECTION, [hours])


@pytest.mark.parametrize(
    "filter",
    [
        'doc_id == "qp7"',
        {"field": "doc_id", "value": "qp7"},
        {"not": {"field": "doc_id", "op": "in", "value": ["zx41", "hours"]}},
    ],
)
async def test_a_filter_keeps_other_documents_out(pipeline: RAGPipeline, filter: object) -> None:
    request = ChatRequest.model_validate(
        {"query": QUESTION, "collection": COLLECTION, "filter": filter}
    )
    sources = await pipeline.retrieve(request)
    assert sources
    assert {s.metadata["doc_id"] for s in sources} == {"qp7"}


async def test_the_pipeline_retrieves_the_same_from_the_in_memory_store(
    pipeline: RAGPipeline, corpus: list[Document]
) -> None:
    memory = RAGPipeline(pipeline.embeddings, InMemoryStore(), pipeline.llm, pipeline.reranker)
    await memory.ingest(COLLECTION, corpus)
    request = ChatRequest(query=QUESTION, collection=COLLECTION, top_n=3)
    from_memory = await memory.retrieve(request)
    from_milvus = await pipeline.retrieve(request)
    assert [s.id for s in from_memory] == [s.id for s in from_milvus]
    assert FACT in from_memory[0].text


async def test_a_malformed_filter_is_an_invalid_request(pipeline: RAGPipeline) -> None:
    request = ChatRequest(query=QUESTION, collection=COLLECTION, filter="doc_id ==== (")
    with pytest.raises(InvalidRequestError, match="filter"):
        await pipeline.answer(request)


@pytest.mark.parametrize("collection", ["empty_one", "never_made"])
async def test_no_sources_gives_an_answer_that_says_so(
    pipeline: RAGPipeline, store: MilvusStore, collection: str
) -> None:
    if collection == "empty_one":
        await store.ensure_collection(collection)
    response = await pipeline.answer(ChatRequest(query=QUESTION, collection=collection))
    assert response.response == NO_SOURCES_ANSWER
    assert response.sources == []
    assert response.timings_ms.generate == 0
    items = [
        item async for item in pipeline.stream(ChatRequest(query=QUESTION, collection=collection))
    ]
    assert items[0] == NO_SOURCES_ANSWER
    assert isinstance(items[-1], ChatResponse)
    assert items[-1].sources == []


async def test_the_reranker_down_still_answers_in_search_order(pipeline: RAGPipeline) -> None:
    async with RerankerClient(mode="handle", app_name="no_such_reranker") as missing:
        degraded = RAGPipeline(
            pipeline.embeddings, pipeline.store, pipeline.llm, missing, pipeline.config
        )
        request = ChatRequest(query=QUESTION, collection=COLLECTION, top_n=2)
        response = await degraded.answer(request)
    searched = await pipeline.store.search(
        COLLECTION, await pipeline.embeddings.embed_one(QUESTION), top_k=10
    )
    assert [s.id for s in response.sources] == [s.id for s in searched[:2]]
    assert all(s.metadata[RERANKED_KEY] is False for s in response.sources)
    assert response.response


async def test_the_llm_down_is_unavailable_fast(pipeline: RAGPipeline) -> None:
    async with LLMClient(mode="handle", app_name="no_such_llm") as missing:
        degraded = RAGPipeline(pipeline.embeddings, pipeline.store, missing, pipeline.reranker)
        start = time.perf_counter()
        with pytest.raises(UnavailableError):
            await degraded.answer(ChatRequest(query=QUESTION, collection=COLLECTION))
    assert time.perf_counter() - start < 20


async def test_a_follow_up_is_rewritten_and_the_rewrite_searched(pipeline: RAGPipeline) -> None:
    history = [
        HistoryMessage(role="user", content=QUESTION),
        HistoryMessage(role="assistant", content="It costs 417 euros [1]."),
    ]
    request = ChatRequest(
        query="And how much power does it draw?", collection=COLLECTION, history=history
    )
    standalone = await pipeline.rewrite(request)
    response = await pipeline.answer(request)
    assert response.rewritten_query == standalone != request.query
    assert response.timings_ms.rewrite > 0
    assert response.timings_ms.rewrite_model is not None
    # The sources are those of the standalone question, not of the follow-up's words.
    alone = await pipeline.retrieve(request.model_copy(update={"query": standalone, "history": []}))
    assert [s.id for s in response.sources] == [s.id for s in alone]


async def test_a_question_without_history_is_not_rewritten(pipeline: RAGPipeline) -> None:
    response = await pipeline.answer(ChatRequest(query=QUESTION, collection=COLLECTION, top_n=2))
    assert response.rewritten_query is None
    assert response.timings_ms.rewrite == 0


async def test_the_answerability_check_runs_on_the_answers_own_prompt(
    pipeline: RAGPipeline,
) -> None:
    checking = RAGPipeline(
        pipeline.embeddings,
        pipeline.store,
        pipeline.llm,
        pipeline.reranker,
        RAGConfig(answer_check=True),
    )
    response = await checking.answer(ChatRequest(query=QUESTION, collection=COLLECTION, top_n=2))
    assert response.timings_ms.check > 0
    assert response.timings_ms.check_model is not None
    if response.response == NOT_FOUND_ANSWER:  # the model judged no: nothing was generated
        assert response.timings_ms.generate == 0
    else:
        assert response.timings_ms.generate > 0


async def test_a_relevance_floor_above_every_score_leaves_no_sources(
    pipeline: RAGPipeline,
) -> None:
    strict = RAGPipeline(
        pipeline.embeddings,
        pipeline.store,
        pipeline.llm,
        pipeline.reranker,
        RAGConfig(min_score=1.01),
    )
    response = await strict.answer(ChatRequest(query=QUESTION, collection=COLLECTION))
    assert response.response == NO_SOURCES_ANSWER
    assert response.sources == []
