"""What a knowledge store is: the :class:`KnowledgeStore` protocol and its records.

A store keeps chunks of documents with their embeddings in named collections and finds
the nearest ones to a query vector (cosine similarity). Every store:

- makes a collection on its first upsert, for vectors of the configured dimension, and
  refuses a vector of another dimension with ``invalid_request``;
- keeps a record once per id (:func:`handler_base.rag.record_id`): upserting it again
  replaces it;
- reads the structured filter of :mod:`handler_base.filters` the same way; a filter
  string is a Milvus expression, which only the Milvus store takes;
- answers a search in a missing collection with no results, and counts 0 deleted there.
- keeps one vocabulary per collection (:mod:`chat_handler.rag.vocabulary` gathers it
  from the collection's texts), which goes when the collection is dropped.

``tests/stores/test_store_contract.py`` runs one test-suite over every store.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, Final, Protocol, Self

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from handler_base.errors import InvalidRequestError, describe_validation_error, too_large
from handler_base.filters import KnowledgeFilter
from handler_base.knowledge import storable_metadata
from handler_base.messages import CollectionName, Source
from handler_base.rag.documents import Chunk, record_id

DOC_ID_FIELD: Final = "doc_id"
CHUNK_INDEX_FIELD: Final = "chunk_index"
RESERVED_METADATA_KEYS: Final = frozenset({DOC_ID_FIELD, CHUNK_INDEX_FIELD})
"""Record fields that a source's metadata carries too, so metadata may not hold them."""

MAX_TEXT_BYTES: Final = 65_535
"""UTF-8 bytes of a chunk's text (Milvus's largest VARCHAR)."""
MAX_DOC_ID_BYTES: Final = 512
"""UTF-8 bytes of a document id."""
MAX_METADATA_BYTES: Final = 65_536
"""Bytes of a chunk's metadata as JSON (Milvus's default limit for a JSON field)."""
MAX_SEARCH_TOP_K: Final = 16_384
"""The largest ``top_k`` of a search (Milvus's largest ``limit``)."""
MAX_TEXTS: Final = 16_384
"""The most chunk texts one :meth:`KnowledgeStore.texts` call reads (Milvus's largest
``limit``)."""
MAX_VOCABULARY_BYTES: Final = 16_384
"""Bytes of a collection's vocabulary as JSON."""

_collection_name: TypeAdapter[str] = TypeAdapter(CollectionName)


class KnowledgeRecord(BaseModel):
    """One chunk of a document with its embedding, ready to be upserted.

    Size limits raise errors that :func:`handler_base.errors.error_from_validation`
    maps to ``too_large``; other bad values map to ``invalid_request``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = Field(min_length=1)
    """The chunk's text, at most :data:`MAX_TEXT_BYTES` UTF-8 bytes."""
    vector: list[float] = Field(min_length=1)
    """The chunk's embedding: finite, not all zero, of the collection's dimension."""
    doc_id: str = Field(min_length=1)
    """The document the chunk came from."""
    chunk_index: int = Field(default=0, ge=0, le=2**63 - 1)
    """The chunk's position in its document."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Free-form JSON (title, path, language...); filter it as ``metadata.<key>``."""

    @classmethod
    def of(cls, chunk: Chunk, vector: Sequence[float]) -> Self:
        """The record of ``chunk`` with its embedding."""
        return cls(
            text=chunk.text,
            vector=list(vector),
            doc_id=chunk.doc_id,
            chunk_index=chunk.chunk_index,
            metadata=chunk.metadata,
        )

    @field_validator("text")
    @classmethod
    def _text_size(cls, value: str) -> str:
        size = len(value.encode("utf-8"))
        if size > MAX_TEXT_BYTES:
            raise too_large(
                "text is {size} bytes as UTF-8, over the limit of {limit}",
                size=size,
                limit=MAX_TEXT_BYTES,
            )
        return value

    @field_validator("doc_id")
    @classmethod
    def _doc_id_size(cls, value: str) -> str:
        if len(value.encode("utf-8")) > MAX_DOC_ID_BYTES:
            raise too_large("doc_id is over the limit of {limit} bytes", limit=MAX_DOC_ID_BYTES)
        return value

    @field_validator("vector")
    @classmethod
    def _vector_usable(cls, value: list[float]) -> list[float]:
        check_vector_values(value)
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        reserved = RESERVED_METADATA_KEYS.intersection(value)
        if reserved:
            raise ValueError(f"metadata must not hold {sorted(reserved)}: they are fields")
        storable_metadata(value)
        try:
            encoded = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"metadata is not JSON: {exc}") from exc
        size = len(encoded.encode("utf-8"))
        if size > MAX_METADATA_BYTES:
            raise too_large(
                "metadata is {size} bytes as JSON, over the limit of {limit}",
                size=size,
                limit=MAX_METADATA_BYTES,
            )
        return value

    @property
    def id(self) -> str:
        """The record's primary key, derived from its content (see :func:`record_id`)."""
        return record_id(self.doc_id, self.chunk_index, self.text)

    def source(self, score: float) -> Source:
        """The record as a search result: its metadata plus ``doc_id`` and ``chunk_index``."""
        return Source(
            id=self.id,
            text=self.text,
            score=score,
            metadata={
                DOC_ID_FIELD: self.doc_id,
                CHUNK_INDEX_FIELD: self.chunk_index,
                **self.metadata,
            },
        )


class CollectionInfo(BaseModel):
    """A collection and the number of chunks it holds."""

    model_config = ConfigDict(extra="forbid")

    name: str
    count: int


class KnowledgeStore(Protocol):
    """Chunks and their embeddings in named collections (see the module doc)."""

    @property
    def dim(self) -> int:
        """The dimension of the collections this store creates."""

    async def upsert(self, collection: str, records: Sequence[KnowledgeRecord]) -> list[str]:
        """Store records, replacing any with the same id; make the collection if missing.

        Returns:
            The id of each record, in the order given.

        Raises:
            InvalidRequestError: Bad collection name, or a vector of the wrong dimension.
        """

    async def search(
        self,
        collection: str,
        vector: Sequence[float],
        top_k: int = 10,
        filter: KnowledgeFilter | None = None,
    ) -> list[Source]:
        """The chunks nearest to ``vector``, best first; none from a missing collection.

        Returns:
            Sources with ``score`` the cosine similarity and ``metadata`` the record's
            metadata plus ``doc_id`` and ``chunk_index``.

        Raises:
            InvalidRequestError: Bad name, ``top_k``, vector or filter.
        """

    async def delete(
        self,
        collection: str,
        ids: Sequence[str] | None = None,
        filter: KnowledgeFilter | None = None,
    ) -> int:
        """Delete records by id, by filter, or both (those matching both); how many.

        Raises:
            InvalidRequestError: Neither ids nor a filter given, or a bad filter.
        """

    async def count(self, collection: str) -> int:
        """The number of records in a collection.

        Raises:
            NotFoundError: The collection does not exist.
        """

    async def collections(self) -> list[CollectionInfo]:
        """Every collection with its count, sorted by name."""

    async def texts(self, collection: str, limit: int = MAX_TEXTS) -> list[str]:
        """The texts of up to ``limit`` chunks of a collection, in no set order.

        A missing collection has none.

        Raises:
            InvalidRequestError: Bad name, or ``limit`` out of range.
        """

    async def vocabulary(self, collection: str) -> list[str] | None:
        """The collection's vocabulary as last kept (:meth:`set_vocabulary`).

        Returns:
            The terms; None when none was ever kept for the collection.

        Raises:
            NotFoundError: The collection does not exist.
        """

    async def set_vocabulary(self, collection: str, terms: Sequence[str]) -> bool:
        """Keep ``terms`` as the collection's vocabulary, replacing what it had.

        The vocabulary lives and dies with its collection (dropping it drops them both).

        Returns:
            False when the collection does not exist (nothing is kept).

        Raises:
            InvalidRequestError: Bad name, or a vocabulary over :data:`MAX_VOCABULARY_BYTES`.
        """

    async def drop_collection(self, collection: str) -> bool:
        """Delete a collection and everything in it; True when it existed."""

    def close(self) -> None:
        """Release what the store holds; safe to call twice."""


def check_collection_name(name: str) -> str:
    """``name`` when it is a valid collection name.

    Raises:
        InvalidRequestError: It is not.
    """
    try:
        return _collection_name.validate_python(name)
    except ValidationError as exc:
        raise InvalidRequestError(
            f"invalid collection name {name!r}: {describe_validation_error(exc)} "
            "(a letter or underscore, then letters, digits or underscores, at most 255)"
        ) from None


def check_vector_values(vector: Sequence[float]) -> None:
    """Raise ValueError for a vector that cosine similarity cannot use."""
    if not all(math.isfinite(x) for x in vector):
        raise ValueError("vector holds NaN or infinity")
    if not any(vector):
        raise ValueError("vector is all zeros (cosine similarity is undefined)")


def check_texts_limit(limit: int) -> int:
    """``limit`` when it is a usable number of texts to read.

    Raises:
        InvalidRequestError: It is not between 1 and :data:`MAX_TEXTS`.
    """
    if not 1 <= limit <= MAX_TEXTS:
        raise InvalidRequestError(f"limit must be between 1 and {MAX_TEXTS}, got {limit}")
    return limit


def vocabulary_json(terms: Sequence[str]) -> str:
    """The terms as a JSON list, within :data:`MAX_VOCABULARY_BYTES`.

    Raises:
        InvalidRequestError: A term that is not a non-empty string, or too many bytes.
    """
    if isinstance(terms, str) or not all(isinstance(t, str) and t.strip() for t in terms):
        raise InvalidRequestError("a vocabulary is a list of non-empty strings")
    encoded = json.dumps(list(terms), ensure_ascii=False)
    if len(encoded.encode("utf-8")) > MAX_VOCABULARY_BYTES:
        raise InvalidRequestError(
            f"the vocabulary is over the limit of {MAX_VOCABULARY_BYTES} bytes as JSON"
        )
    return encoded


def check_query(vector: Sequence[float], top_k: int) -> list[float]:
    """The query vector as floats, when it and ``top_k`` are usable.

    Raises:
        InvalidRequestError: ``top_k`` out of range, or an unusable vector.
    """
    if not 1 <= top_k <= MAX_SEARCH_TOP_K:
        raise InvalidRequestError(f"top_k must be between 1 and {MAX_SEARCH_TOP_K}, got {top_k}")
    query = [float(x) for x in vector]
    try:
        check_vector_values(query)
    except ValueError as exc:
        raise InvalidRequestError(f"query {exc}") from None
    return query


def check_dimension(name: str, dim: int | None, vector: Sequence[float]) -> None:
    """Raise for a vector that collection ``name`` of dimension ``dim`` cannot hold.

    Raises:
        InvalidRequestError: The dimensions differ.
    """
    if dim is not None and len(vector) != dim:
        raise InvalidRequestError(
            f"collection {name!r} holds {dim}-dimensional vectors, "
            f"got one of {len(vector)} dimensions"
        )
