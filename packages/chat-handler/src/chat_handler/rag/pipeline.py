"""The RAG pipeline: embed the question, search, rerank, prompt, generate.

In order: a question with history is first rewritten by the LLM into a standalone one
(searched and answered in place of the question; the response says so); passages below
the relevance floor are dropped; the LLM is asked whether the passages answer the
question at all, and on a no the answer says it was not found; the answer streams
through a guard that drops citations of no passage and cuts an answer that loops
(:mod:`chat_handler.rag.grounding`). Each step is a :class:`RAGConfig` switch.

The chat handler runs it (the voice handler asks the chat handler). Its clients and its
knowledge store are injected, so it runs the same through Ray handles or over HTTP,
over Milvus or another :class:`~chat_handler.stores.KnowledgeStore`::

    pipeline = RAGPipeline(EmbeddingsClient(), MilvusStore(), LLMClient(), RerankerClient())
    response = await pipeline.answer(ChatRequest(query="What does the ZX-41 cost?"))
    async for item in pipeline.stream(request):
        ...  # str pieces of the answer, then the ChatResponse

Degraded paths:

- Reranker down (``unavailable`` or ``timeout``), or no reranker: the passages keep
  the search order, cut to ``top_n``, and each source says ``"reranked": False``.
- No passages (an empty or missing collection, a filter that matches nothing, or none
  above the floor): the answer is :attr:`RAGConfig.no_sources_answer` and the LLM is not
  called, so it is fast and cannot make an answer up.
- LLM down: its :class:`~handler_base.errors.UnavailableError` propagates.
- A malformed filter: :class:`~handler_base.errors.InvalidRequestError` from the search.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from chat_handler.rag.grounding import AnswerGuard, answerability_request, says_no
from chat_handler.rag.prompt import (
    PASSAGES_FIELD,
    PROMPT_TEMPLATE,
    Prompt,
    PromptBudget,
    build_prompt,
    rewrite_prompt,
    standalone_question,
)
from chat_handler.stores import KnowledgeRecord, KnowledgeStore
from handler_base.clients.embeddings import EmbeddingsClient
from handler_base.clients.llm import LLMClient
from handler_base.clients.reranker import RerankerClient
from handler_base.errors import RequestTimeoutError, UnavailableError
from handler_base.filters import AllOf, FieldCondition
from handler_base.inference import ChatCompletionRequest
from handler_base.messages import ChatRequest, ChatResponse, ChatTimings, Source
from handler_base.rag.chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE
from handler_base.rag.documents import Document, chunk_document
from handler_base.telemetry import record_stage, span

logger = logging.getLogger(__name__)

NO_SOURCES_ANSWER = (
    "I found no sources in the knowledge base for this question, so I can't answer it from them."
)
NOT_FOUND_ANSWER = "I couldn't find the answer to that in the knowledge base."
"""The answer when passages were found but the answerability check said they do not answer."""
REWRITE_TOKENS = 64
"""Tokens the follow-up rewrite may write (one question)."""

RERANKED_KEY = "reranked"
"""Source metadata: True when the reranker ordered the passages, False when it could not."""
SEARCH_SCORE_KEY = "search_score"
"""Source metadata: the vector search's score, when ``score`` is the reranker's."""


class RAGConfig(BaseModel):
    """Settings of a :class:`RAGPipeline`: the chat application's ``rag`` builder argument.

    Attributes:
        budget: The LLM's context budget for the prompt.
        temperature: Sampling temperature of the answer; 0 (greedy) by default: it keeps a
            small model closest to the passages and answers a question the same way each time.
        prompt_template: The system prompt; its ``{passages}`` becomes the numbered passages.
        no_sources_answer: The answer when no passage was found.
        not_found_answer: The answer when the passages do not answer the question (the
            answerability check said no).
        min_score: A relevance floor: passages scoring below it are dropped before the
            prompt (the reranker's score where it ranked them, else the search's); None
            keeps every passage.
        answer_check: Ask the LLM first whether the passages answer the question at all
            (one word; with llama.cpp's prompt cache it reuses the answer's evaluation of
            the passages); on a no, the answer is ``not_found_answer``. Off by default:
            it needs a model that can judge (Qwen2.5-1.5B does; the 0.5B says no to
            every question, BENCHMARKS.md "Answer quality"), so ``aictl`` turns it on
            with the models that pass it.
        rewrite_follow_ups: With history, have the LLM rewrite the question into a
            standalone one first, and search and answer that.
        chunk_size: Characters per chunk at ingest.
        chunk_overlap: Characters of whole sentences repeated between chunks at ingest.
    """

    model_config = ConfigDict(extra="forbid")

    budget: PromptBudget = Field(default_factory=PromptBudget)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    prompt_template: str = Field(default=PROMPT_TEMPLATE, min_length=1)
    no_sources_answer: str = Field(default=NO_SOURCES_ANSWER, min_length=1)
    not_found_answer: str = Field(default=NOT_FOUND_ANSWER, min_length=1)
    min_score: float | None = None
    answer_check: bool = False
    rewrite_follow_ups: bool = True
    chunk_size: int = Field(default=DEFAULT_CHUNK_SIZE, ge=1)
    chunk_overlap: int = Field(default=DEFAULT_CHUNK_OVERLAP, ge=0)

    @field_validator("prompt_template")
    @classmethod
    def _has_passages(cls, template: str) -> str:
        if PASSAGES_FIELD not in template:
            raise ValueError(f"prompt_template must say where the passages go: {PASSAGES_FIELD}")
        return template

    @model_validator(mode="after")
    def _overlap_below_size(self) -> Self:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be below chunk_size ({self.chunk_size})"
            )
        return self


def model_time(timings: dict[str, float] | None, key: str, model_time_ms: float | None) -> None:
    """Note a stage's model compute (as the service reported it) in ``timings``."""
    if timings is not None and model_time_ms is not None:
        timings[key] = model_time_ms


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a question is answered with, decided before the answer is written.

    ``prompt`` when the LLM is to write the answer, else the fixed ``answer``.
    """

    rewritten: str | None
    sources: list[Source]
    prompt: Prompt | None = None
    answer: str | None = None


class RAGPipeline:
    """Answers ChatRequests from a knowledge store (see the module doc).

    Attributes:
        embeddings: Embeds questions and chunks.
        store: The knowledge base.
        llm: Writes the answers.
        reranker: Orders the passages; None to keep the search order.
        config: The pipeline's settings.
    """

    def __init__(
        self,
        embeddings: EmbeddingsClient,
        store: KnowledgeStore,
        llm: LLMClient,
        reranker: RerankerClient | None = None,
        config: RAGConfig | None = None,
    ) -> None:
        """Make a pipeline over the given clients (nothing is called yet)."""
        self.embeddings = embeddings
        self.store = store
        self.llm = llm
        self.reranker = reranker
        self.config = config or RAGConfig()

    # --- answering ----------------------------------------------------------------------

    async def retrieve(
        self, request: ChatRequest, timings: dict[str, float] | None = None
    ) -> list[Source]:
        """The passages for ``request``: embedded, searched, reranked to ``top_n``.

        Args:
            request: The question and the retrieval options.
            timings: Where the ``embed``, ``search`` and ``rerank`` milliseconds go.

        Returns:
            At most ``top_n`` sources, best first.

        Raises:
            InvalidRequestError: A malformed filter.
            PlatformError: What the embeddings service or the store raised.
        """
        with span("rag.embed", timings=timings, key="embed"):
            embedded = await self.embeddings.embed_answer([request.query])
        vector = embedded.vectors[0]
        model_time(timings, "embed_model", embedded.model_time_ms)
        with span("rag.search", timings=timings, key="search"):
            found = await self.store.search(
                request.collection, vector, top_k=request.top_k, filter=request.filter
            )
        with span("rag.rerank", timings=timings, key="rerank"):
            return await self._rerank(request.query, found, request.top_n, timings)

    async def _rerank(
        self, query: str, found: list[Source], top_n: int, timings: dict[str, float] | None
    ) -> list[Source]:
        if not found:
            return []
        if self.reranker is not None:
            try:
                answer = await self.reranker.rerank_answer(query, [s.text for s in found], top_n)
            except (UnavailableError, RequestTimeoutError) as exc:
                logger.warning("reranker failed, keeping the search order: %s", exc.message)
            else:
                results = answer.results
                model_time(timings, "rerank_model", answer.model_time_ms)
                return [
                    found[r.index].model_copy(
                        update={
                            "score": r.relevance_score,
                            "metadata": {
                                **found[r.index].metadata,
                                RERANKED_KEY: True,
                                SEARCH_SCORE_KEY: found[r.index].score,
                            },
                        }
                    )
                    for r in results
                ]
        return [
            s.model_copy(update={"metadata": {**s.metadata, RERANKED_KEY: False}})
            for s in found[:top_n]
        ]

    def prompt(self, request: ChatRequest, sources: Sequence[Source]) -> Prompt:
        """The LLM prompt for ``request`` with ``sources``, within the context budget."""
        return build_prompt(
            request.query,
            sources,
            request.history,
            self.config.budget,
            self.config.prompt_template,
        )

    async def rewrite(self, request: ChatRequest, timings: dict[str, float] | None = None) -> str:
        """The question of ``request`` made standalone from its history, by the LLM.

        Returns:
            The standalone question; the question itself when there is no history, or
            when the question alone fills the context budget.
        """
        messages = rewrite_prompt(request.query, request.history, self.config.budget)
        if messages is None:
            return request.query
        with span("rag.rewrite", timings=timings, key="rewrite"):
            completion = await self.llm.chat(
                ChatCompletionRequest(messages=messages, max_tokens=REWRITE_TOKENS, temperature=0.0)
            )
        model_time(timings, "rewrite_model", completion.model_time_ms)
        return standalone_question(completion.text, request.query)

    async def _plan(self, request: ChatRequest, timings: dict[str, float]) -> _Plan:
        """Everything before the answer is written: rewrite, retrieval, the check."""
        asked = request
        if request.history and self.config.rewrite_follow_ups:
            standalone = await self.rewrite(request, timings)
            if standalone != request.query:
                asked = request.model_copy(update={"query": standalone})
        rewritten = asked.query if asked is not request else None
        sources = await self.retrieve(asked, timings)
        if self.config.min_score is not None:
            sources = [s for s in sources if s.score >= self.config.min_score]
        if not sources:
            return _Plan(rewritten, [], answer=self.config.no_sources_answer)
        prompt = self.prompt(asked, sources)
        if self.config.answer_check:
            with span("rag.check", timings=timings, key="check"):
                reply = await self.llm.chat(answerability_request(prompt.messages[0], asked.query))
            model_time(timings, "check_model", reply.model_time_ms)
            if says_no(reply.text):
                return _Plan(rewritten, prompt.sources, answer=self.config.not_found_answer)
        return _Plan(rewritten, prompt.sources, prompt=prompt)

    def _completion(self, prompt: Prompt) -> ChatCompletionRequest:
        return ChatCompletionRequest(
            messages=prompt.messages,
            max_tokens=self.config.budget.answer_tokens,
            temperature=self.config.temperature,
        )

    async def answer(self, request: ChatRequest) -> ChatResponse:
        """The whole answer to ``request``, with its sources and the time of each stage.

        Raises:
            InvalidRequestError: A malformed filter.
            UnavailableError: The LLM (or the embeddings service, or Milvus) is down.
            PlatformError: What else a service raised.
        """
        stream = self.stream(request)
        try:
            async for item in stream:
                if isinstance(item, ChatResponse):
                    return item
        finally:
            await stream.aclose()
        raise AssertionError("the answer stream ended without its response")  # pragma: no cover

    async def stream(self, request: ChatRequest) -> AsyncGenerator[str | ChatResponse, None]:
        """The answer to ``request`` as it is written: text pieces, then the ChatResponse.

        The ChatResponse's ``response`` is the pieces joined. The pieces pass an
        :class:`~chat_handler.rag.grounding.AnswerGuard`: a citation of no passage is
        dropped, an answer that starts to loop is cut and its generation stopped, and an
        answer of no words (a small model's bare "[1]") becomes ``not_found_answer``.
        Close the generator (``aclose()``) when leaving early: the LLM then stops generating.

        Raises:
            PlatformError: As for :meth:`answer`; before the first piece, or during.
        """
        start = time.perf_counter()
        timings: dict[str, float] = {}
        plan = await self._plan(request, timings)
        if plan.prompt is None:
            text = plan.answer or ""
            yield text
            yield self._response(request, text, plan, timings, start)
            return
        guard = AnswerGuard(len(plan.sources))
        # Recorded after the fact: a span would stay the current context across the yields.
        generate_start = time.time_ns()
        stream = self.llm.chat_stream(self._completion(plan.prompt))
        try:
            async for chunk in stream:
                # The last chunk carries the replica's generation time.
                model_time(timings, "generate_model", chunk.model_time_ms)
                for piece in chunk.texts:
                    if released := guard.feed(piece):
                        yield released
                if guard.stopped:
                    logger.info("the answer repeated itself; it was cut there")
                    break
        finally:
            await stream.aclose()
        if guard.wordless:  # nothing but citations, or nothing: it found no answer
            text = self.config.not_found_answer
            yield text
        else:
            if rest := guard.finish():
                yield rest
            text = guard.text
        record_stage("rag.generate", generate_start, timings=timings, key="generate")
        yield self._response(request, text, plan, timings, start)

    @staticmethod
    def _response(
        request: ChatRequest,
        text: str,
        plan: _Plan,
        timings: dict[str, float],
        start: float,
    ) -> ChatResponse:
        total = (time.perf_counter() - start) * 1000
        return ChatResponse(
            response=text,
            sources=plan.sources,
            request_id=request.request_id,
            timings_ms=ChatTimings(**timings, total=total),
            rewritten_query=plan.rewritten,
        )

    # --- ingesting ----------------------------------------------------------------------

    async def ingest(self, collection: str, documents: Sequence[Document]) -> list[str]:
        """Chunk, embed and store documents; a document's old chunks are replaced.

        Chunk ids derive from the content (:func:`~handler_base.rag.record_id`),
        so ingesting the same document again adds nothing; chunks a changed document no
        longer has are deleted after its new ones are stored. Then the collection's
        vocabulary (its names and rare terms, for the voice app's Whisper) is gathered
        again from its chunks (:func:`~chat_handler.rag.vocabulary.refresh_vocabulary`).

        Args:
            collection: The collection (made when missing).
            documents: The documents.

        Returns:
            The ids of the stored chunks, in order.

        Raises:
            PlatformError: What the embeddings service or the store raised.
        """
        from chat_handler.rag.vocabulary import refresh_vocabulary

        ids: list[str] = []
        for document in documents:
            chunks = chunk_document(document, self.config.chunk_size, self.config.chunk_overlap)
            vectors = await self.embeddings.embed([c.text for c in chunks])
            records = [KnowledgeRecord.of(c, v) for c, v in zip(chunks, vectors, strict=True)]
            stored = await self.store.upsert(collection, records)
            stale: AllOf | FieldCondition = document_filter(document.id)
            if stored:
                kept = FieldCondition(field="id", op="not_in", value=list(stored))
                stale = AllOf(all_=[stale, kept])
            await self.store.delete(collection, filter=stale)
            ids.extend(stored)
        if documents:
            await refresh_vocabulary(self.store, collection)
        return ids


def document_filter(doc_id: str) -> FieldCondition:
    """The filter that selects every chunk of document ``doc_id``."""
    return FieldCondition(field="doc_id", op="eq", value=doc_id)
