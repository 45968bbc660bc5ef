"""Bodies of the chat handler's routes (the knowledge base API and the OpenAI route).

The knowledge-base bodies live in :mod:`handler_base.knowledge` (its clients and the
ingestion pipelines share them); they are re-exported here under their old names.
"""

from __future__ import annotations

from pydantic import Field

from handler_base.filters import KnowledgeFilter
from handler_base.inference import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
)
from handler_base.knowledge import (
    MAX_DOCUMENT_CHARS,
    MAX_INGEST_DOCUMENTS,
    CollectionsResponse,
    CollectionSummary,
    DeleteRequest,
    DeleteResponse,
    IngestRequest,
    IngestResponse,
    KnowledgeDocument,
    SearchRequest,
    SearchResponse,
)
from handler_base.messages import (
    DEFAULT_COLLECTION,
    DEFAULT_TOP_K,
    MAX_TOP_K,
    CollectionName,
    Source,
)

__all__ = [
    "MAX_DOCUMENT_CHARS",
    "MAX_INGEST_DOCUMENTS",
    "CollectionSummary",
    "CollectionsResponse",
    "DeleteRequest",
    "DeleteResponse",
    "IngestRequest",
    "IngestResponse",
    "KnowledgeDocument",
    "RagCompletionChunk",
    "RagCompletionRequest",
    "RagCompletionResponse",
    "SearchRequest",
    "SearchResponse",
]


class RagCompletionRequest(ChatCompletionRequest):
    """An OpenAI chat request with the ChatRequest's retrieval options as extra fields."""

    collection: CollectionName = DEFAULT_COLLECTION
    top_k: int = Field(default=DEFAULT_TOP_K, ge=1, le=MAX_TOP_K)
    top_n: int = Field(default=5, ge=1, le=MAX_TOP_K)
    filter: KnowledgeFilter | None = None


class RagCompletionResponse(ChatCompletionResponse):
    """An OpenAI chat response with the answer's sources."""

    sources: list[Source] = Field(default_factory=list)


class RagCompletionChunk(ChatCompletionChunk):
    """An OpenAI stream chunk; the last one carries the sources."""

    sources: list[Source] | None = None
