"""Bodies of the chat handler's routes (the knowledge base API and the OpenAI route)."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from handler_base.inference import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
)
from handler_base.messages import (
    DEFAULT_COLLECTION,
    MAX_FILTER_CHARS,
    MAX_TOP_K,
    CollectionName,
    Query,
    Source,
)
from handler_base.rag import Document

MAX_INGEST_DOCUMENTS = 1000
"""Documents one ingest request may carry."""
MAX_DOCUMENT_CHARS = 1_000_000
"""Characters of one ingested document."""

FilterExpression = Annotated[str, StringConstraints(max_length=MAX_FILTER_CHARS)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KnowledgeDocument(_Body):
    """A document to ingest; its id is a hash of its text when not given."""

    id: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = None
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_DOCUMENT_CHARS)]
    metadata: dict[str, Any] = Field(default_factory=dict)

    def to_document(self) -> Document:
        """The pipeline's Document; ``title`` in the metadata becomes its title."""
        doc_id = self.id or hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:32]
        title = self.metadata.get("title")
        return Document(
            id=doc_id,
            title=title if isinstance(title, str) else None,
            text=self.text,
            metadata=self.metadata,
        )


class IngestRequest(_Body):
    """``POST /chat/knowledge/documents``."""

    collection: CollectionName = DEFAULT_COLLECTION
    documents: Annotated[
        list[KnowledgeDocument], Field(min_length=1, max_length=MAX_INGEST_DOCUMENTS)
    ]


class IngestResponse(_Body):
    """What an ingest stored: the document ids and the number of chunks."""

    collection: str
    ids: list[str]
    chunks: int


class SearchRequest(_Body):
    """``POST /chat/knowledge/search``."""

    query: Query
    collection: CollectionName = DEFAULT_COLLECTION
    top_k: int = Field(default=10, ge=1, le=MAX_TOP_K)
    filter: FilterExpression | None = None


class SearchResponse(_Body):
    """The passages found, best first."""

    results: list[Source]


class DeleteResponse(_Body):
    """How many chunks a delete removed."""

    deleted: int


class CollectionSummary(_Body):
    """A collection and its chunk count."""

    name: str
    count: int


class CollectionsResponse(_Body):
    """``GET /chat/knowledge/collections``."""

    collections: list[CollectionSummary]


class RagCompletionRequest(ChatCompletionRequest):
    """An OpenAI chat request with the ChatRequest's retrieval options as extra fields."""

    collection: CollectionName = DEFAULT_COLLECTION
    top_k: int = Field(default=10, ge=1, le=MAX_TOP_K)
    top_n: int = Field(default=5, ge=1, le=MAX_TOP_K)
    filter: FilterExpression | None = None


class RagCompletionResponse(ChatCompletionResponse):
    """An OpenAI chat response with the answer's sources."""

    sources: list[Source] = Field(default_factory=list)


class RagCompletionChunk(ChatCompletionChunk):
    """An OpenAI stream chunk; the last one carries the sources."""

    sources: list[Source] | None = None
