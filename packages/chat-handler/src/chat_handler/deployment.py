"""The chat deployment: ``/chat`` answered with RAG, and the ``/chat/knowledge`` API.

It owns the knowledge base: a :class:`~chat_handler.stores.KnowledgeStore`, Milvus Lite
under ``DATA_DIR`` by default (in the embedded stack it is the one process that opens the
database), the Milvus server of ``milvus_uri``, or memory (``store: memory``). The RAG
pipeline, its prompt and its chunking are configured by the builder's ``rag`` argument
(:class:`~chat_handler.rag.RAGConfig`), so changing them redeploys this application
only. The models are reached through their clients (Ray handle first, HTTP fallback).

Handle methods, for the voice handler and the NATS bridge: :meth:`ChatDeployment.chat`
(a whole ChatResponse) and :meth:`ChatDeployment.chat_stream` (text pieces, then the
ChatResponse; call it with ``handle.options(stream=True)``); for the knowledge base
(:class:`handler_base.clients.KnowledgeClient`): ``ingest``, ``search``,
``delete_document``, ``collections`` and ``vocabulary``, which the ``/knowledge`` routes
call too.
"""

# No `from __future__ import annotations`: through `serve.ingress`, FastAPI must see the
# routes' body models themselves, not their names.

from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import FastAPI, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import Field, ValidationError
from ray import serve
from ray.serve import Application

from chat_handler.models import (
    CollectionsResponse,
    CollectionSummary,
    DeleteRequest,
    DeleteResponse,
    IngestRequest,
    IngestResponse,
    RagCompletionChunk,
    RagCompletionRequest,
    RagCompletionResponse,
    SearchRequest,
    SearchResponse,
)
from chat_handler.rag import RAGConfig, RAGPipeline, document_filter
from chat_handler.rag.vocabulary import refresh_vocabulary
from chat_handler.stores import StoreKind, open_store
from handler_base.clients import EmbeddingsClient, LLMClient, RerankerClient
from handler_base.deployment import (
    CHAT_BODY_BYTES,
    INGEST_BODY_BYTES,
    HandlerArgs,
    bind_deployment,
)
from handler_base.errors import (
    InvalidRequestError,
    error_from_validation,
    validate_as,
)
from handler_base.http import (
    AdmissionLimits,
    configure_guard,
    platform_app,
    sse_event,
    stream_events,
)
from handler_base.inference import (
    AssistantMessage,
    ChatCompletionChoice,
    ChunkChoice,
    ChunkDelta,
    completion_id,
)
from handler_base.knowledge import VocabularyRequest, VocabularyResponse
from handler_base.messages import (
    COLLECTION_NAME_PATTERN,
    DEFAULT_COLLECTION,
    ChatRequest,
    ChatResponse,
    HistoryMessage,
)
from handler_base.settings import Settings
from handler_base.telemetry import continue_trace, setup_telemetry

DEFAULT_MODEL_NAME = "rag"
"""The ``model`` answered by the OpenAI route when the request names none."""

api: FastAPI = platform_app(
    "Chat",
    "Chat answered from a knowledge base, with sources.",
    max_body_bytes=CHAT_BODY_BYTES,
    route_body_bytes={"/knowledge/documents": INGEST_BODY_BYTES},
)


def chat_request_of(body: RagCompletionRequest) -> ChatRequest:
    """The ChatRequest of an OpenAI request: the last user message asks, the rest is history.

    Raises:
        InvalidRequestError: The last message is not the user's, or an option is invalid.
        TooLargeError: A message breaks a size limit.
    """
    *earlier, last = body.messages
    if last.role != "user":
        raise InvalidRequestError("the last message must be the user's question")
    try:
        return ChatRequest(
            query=last.content,
            history=[HistoryMessage(role=m.role, content=m.content) for m in earlier],
            collection=body.collection,
            top_k=body.top_k,
            top_n=body.top_n,
            filter=body.filter,
        )
    except ValidationError as exc:
        raise error_from_validation(exc) from exc


class ChatArgs(HandlerArgs):
    """Builder arguments of the chat application (the Serve config's ``args``).

    Attributes:
        store: The knowledge store: ``milvus`` (Lite under ``DATA_DIR``, or the server of
            ``MILVUS_URI``/``MILVUS_HOST``), or ``memory`` (empty at start, gone at exit).
        milvus_uri: The Milvus knowledge base (a Lite ``.db`` path or a server URL); the
            settings' when None.
        llm_model: The ``model`` the LLM requests name: Ray Serve LLM's model id (its
            ``model_loading_config.model_id``) in the gpu profile; None in the cpu profile,
            whose LLM answers any name.
        rag: The pipeline: prompt template, context budget, temperature, chunking.
    """

    store: StoreKind = "milvus"
    milvus_uri: str | None = None
    llm_model: str | None = Field(default=None, min_length=1)
    rag: RAGConfig = Field(default_factory=RAGConfig)


@serve.deployment(name="ChatDeployment")
@serve.ingress(api)
class ChatDeployment:
    """Answers questions from the knowledge base it owns."""

    def __init__(self, args: ChatArgs, admission: AdmissionLimits | None = None) -> None:
        """Make the clients, the store and the pipeline (nothing is connected yet).

        Args:
            args: The validated builder arguments.
            admission: The request guard's limits, when not those of ``args`` (a
                benchmark's unbounded guard).
        """
        settings = Settings()
        configure_guard(api, admission or args.admission(), settings)
        if args.milvus_uri is not None:
            settings = settings.model_copy(
                update={"milvus_uri": args.milvus_uri, "milvus_host": None}
            )
        setup_telemetry(settings, service_name="chat-handler")
        self.store = open_store(args.store, settings)
        self.pipeline = RAGPipeline(
            EmbeddingsClient(settings),
            self.store,
            LLMClient(settings, model=args.llm_model),
            RerankerClient(settings),
            args.rag,
        )

    # --- handle methods -----------------------------------------------------------------

    @continue_trace
    async def chat(self, request: ChatRequest | Mapping[str, Any]) -> ChatResponse:
        """The whole answer to ``request``, with its sources.

        Raises:
            PlatformError: A bad request, or a service that failed.
        """
        return await self.pipeline.answer(validate_as(ChatRequest, request))

    @continue_trace
    async def chat_stream(
        self, request: ChatRequest | Mapping[str, Any]
    ) -> AsyncIterator[str | ChatResponse]:
        """The answer as it is written: text pieces, then the ChatResponse.

        Raises:
            PlatformError: A bad request, or a service that failed.
        """
        stream = self.pipeline.stream(validate_as(ChatRequest, request))
        try:
            async for item in stream:
                yield item
        finally:
            await stream.aclose()

    async def ingest(self, request: IngestRequest | Mapping[str, Any]) -> IngestResponse:
        """Chunk, embed and store documents; the same document again adds nothing.

        Raises:
            PlatformError: A bad request, or a service that failed.
        """
        body = validate_as(IngestRequest, request)
        documents = [d.to_document() for d in body.documents]
        chunk_ids = await self.pipeline.ingest(body.collection, documents)
        return IngestResponse(
            collection=body.collection, ids=[d.id for d in documents], chunks=len(chunk_ids)
        )

    async def search(self, request: SearchRequest | Mapping[str, Any]) -> SearchResponse:
        """The passages nearest the query, without an answer.

        In the vector search's order; with ``rerank``, in the order the chat's pipeline
        gives them to the LLM (its reranker over all ``top_k``, or the search order when
        the reranker is down: each source's ``reranked`` says which).

        Raises:
            PlatformError: A bad request, or a service that failed.
        """
        body = validate_as(SearchRequest, request)
        vector = await self.pipeline.embeddings.embed_one(body.query)
        found = await self.store.search(
            body.collection, vector, top_k=body.top_k, filter=body.filter
        )
        if body.rerank:
            found = await self.pipeline._rerank(body.query, found, len(found), None)
        return SearchResponse(results=found)

    async def delete_document(self, request: DeleteRequest | Mapping[str, Any]) -> DeleteResponse:
        """Delete every chunk of a document (``{id, collection}``).

        Raises:
            PlatformError: A bad request, or a store that failed.
        """
        body = validate_as(DeleteRequest, request)
        deleted = await self.store.delete(body.collection, filter=document_filter(body.id))
        if deleted:
            await refresh_vocabulary(self.store, body.collection)
        return DeleteResponse(deleted=deleted)

    async def collections(self) -> CollectionsResponse:
        """The collections and their chunk counts."""
        found = await self.store.collections()
        return CollectionsResponse(
            collections=[CollectionSummary(name=c.name, count=c.count) for c in found]
        )

    async def vocabulary(
        self, request: VocabularyRequest | Mapping[str, Any]
    ) -> VocabularyResponse:
        """The collection's names and rare terms (``{collection}``), gathered at ingest.

        A collection ingested before vocabularies were kept gets its vocabulary now.

        Raises:
            NotFoundError: The collection does not exist.
            PlatformError: A bad name, or a store that failed.
        """
        body = validate_as(VocabularyRequest, request)
        terms = await self.store.vocabulary(body.collection)
        if terms is None:
            terms = await refresh_vocabulary(self.store, body.collection)
        return VocabularyResponse(collection=body.collection, terms=terms)

    # --- HTTP routes ----------------------------------------------------------------------

    @api.post("/", response_model=None)
    async def post_chat(self, body: ChatRequest) -> ChatResponse | StreamingResponse:
        """``POST /chat``: a ChatResponse, or SSE ``text`` events then ``done``."""
        if not body.stream:
            return await self.pipeline.answer(body)

        def event_of(item: str | ChatResponse) -> str:
            if isinstance(item, ChatResponse):
                return sse_event(item, event="done")
            return sse_event({"text": item}, event="text")

        return await stream_events(
            self.pipeline.stream(body),
            event_of,
            failure="the chat answer failed",
            error_event="error",
        )

    @api.post("/v1/chat/completions", response_model=None)
    async def chat_completions(
        self, body: RagCompletionRequest
    ) -> RagCompletionResponse | StreamingResponse:
        """The OpenAI chat route answered with RAG; sources in the extra ``sources`` field."""
        request = chat_request_of(body)
        model = body.model or DEFAULT_MODEL_NAME
        if not body.stream:
            answer = await self.pipeline.answer(request)
            return RagCompletionResponse(
                model=model,
                choices=[
                    ChatCompletionChoice(
                        message=AssistantMessage(content=answer.response), finish_reason="stop"
                    )
                ],
                sources=answer.sources,
            )
        chunk_id = completion_id()

        def chunk(delta: ChunkDelta, **fields: Any) -> str:
            return sse_event(
                RagCompletionChunk(
                    id=chunk_id,
                    model=model,
                    choices=[ChunkChoice(delta=delta, finish_reason=fields.pop("finish", None))],
                    **fields,
                )
            )

        def chunk_of(item: str | ChatResponse) -> str:
            if isinstance(item, ChatResponse):
                return chunk(ChunkDelta(), finish="stop", sources=item.sources)
            return chunk(ChunkDelta(content=item))

        return await stream_events(
            self.pipeline.stream(request),
            chunk_of,
            failure="the chat answer failed",
            opening=[chunk(ChunkDelta(role="assistant", content=""))],
            closing=[sse_event("[DONE]")],
        )

    @api.post("/knowledge/documents")
    async def post_documents(self, body: IngestRequest) -> IngestResponse:
        """``POST /chat/knowledge/documents``: see :meth:`ingest`."""
        return await self.ingest(body)

    @api.post("/knowledge/search")
    async def post_search(self, body: SearchRequest) -> SearchResponse:
        """``POST /chat/knowledge/search``: see :meth:`search`."""
        return await self.search(body)

    # `:path`: document ids made from file paths hold slashes.
    @api.delete("/knowledge/documents/{doc_id:path}")
    async def delete_document_route(
        self, doc_id: str, collection: str = Query(default=DEFAULT_COLLECTION)
    ) -> DeleteResponse:
        """``DELETE /chat/knowledge/documents/{id}?collection=``: see :meth:`delete_document`."""
        return await self.delete_document({"id": doc_id, "collection": collection})

    @api.get("/knowledge/collections")
    async def get_collections(self) -> CollectionsResponse:
        """``GET /chat/knowledge/collections``: see :meth:`collections`."""
        return await self.collections()

    @api.get("/knowledge/collections/{collection}/vocabulary")
    async def get_vocabulary(
        self, collection: str = Path(pattern=COLLECTION_NAME_PATTERN)
    ) -> VocabularyResponse:
        """``GET /chat/knowledge/collections/{name}/vocabulary``: see :meth:`vocabulary`."""
        return await self.vocabulary({"collection": collection})


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The chat application (``import_path: chat_handler:build_app``, route ``/chat``).

    Args:
        args: :class:`ChatArgs` fields.

    Returns:
        The bound deployment; nothing is opened until a replica starts.
    """
    return bind_deployment(ChatDeployment, ChatArgs.model_validate(args or {}))
