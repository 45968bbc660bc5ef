"""Bodies of the knowledge-base API (``/chat/knowledge/...``), shared by server and clients.

The chat deployment serves these routes (it owns the knowledge base);
:class:`handler_base.clients.KnowledgeClient` calls them, and so do the ingestion
pipelines, which never open Milvus themselves.
"""

from __future__ import annotations

import hashlib
import math
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from handler_base.filters import KnowledgeFilter
from handler_base.messages import (
    DEFAULT_COLLECTION,
    MAX_TOP_K,
    CollectionName,
    Query,
    Source,
)
from handler_base.rag.documents import Document

MAX_INGEST_DOCUMENTS = 1000
"""Documents one ingest request may carry."""
MAX_DOCUMENT_CHARS = 1_000_000
"""Characters of one ingested document."""
MAX_DOCUMENT_ID_CHARS = 512

METADATA_INT_RANGE = (-(2**63), 2**63 - 1)
"""Integers the store's JSON field keeps (pymilvus encodes it with orjson: 64 bits)."""

DocumentId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_DOCUMENT_ID_CHARS)]


def storable_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` when the knowledge store can keep it: JSON, string keys, 64-bit integers.

    Raises:
        ValueError: A value the store cannot keep (the message does not echo it).
    """
    low, high = METADATA_INT_RANGE
    pending: list[Any] = [metadata]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            if not all(isinstance(key, str) for key in item):
                raise ValueError("metadata keys must be strings")
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
        elif item is None or isinstance(item, str | bool):
            continue
        elif isinstance(item, int):
            if not low <= item <= high:
                raise ValueError("metadata holds an integer outside the 64-bit range")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError("metadata holds a number that is not finite")
        else:
            raise ValueError(f"metadata holds a value that is not JSON ({type(item).__name__})")
    return metadata


StorableMetadata = Annotated[dict[str, Any], AfterValidator(storable_metadata)]
"""Free-form JSON metadata that the knowledge store can keep."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KnowledgeDocument(_Body):
    """A document to ingest; its id is a hash of its text when not given."""

    id: DocumentId | None = None
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_DOCUMENT_CHARS)]
    metadata: StorableMetadata = Field(default_factory=dict)

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
    filter: KnowledgeFilter | None = None
    rerank: bool = False
    """Reorder the ``top_k`` passages as the chat's pipeline does (its reranker, all kept),
    rather than answer them in the vector search's order."""


class SearchResponse(_Body):
    """The passages found, best first."""

    results: list[Source]


class DeleteRequest(_Body):
    """``DELETE /chat/knowledge/documents/{id}?collection=``, as one body (handle callers)."""

    id: DocumentId
    collection: CollectionName = DEFAULT_COLLECTION


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


class VocabularyRequest(_Body):
    """``GET /chat/knowledge/collections/{name}/vocabulary``, as one body (handle callers)."""

    collection: CollectionName = DEFAULT_COLLECTION


class VocabularyResponse(_Body):
    """A collection's names and rare terms, most salient first.

    ``GET /chat/knowledge/collections/{name}/vocabulary``; the voice app gives them to
    Whisper as ``hotwords``.
    """

    collection: str
    terms: list[str]
