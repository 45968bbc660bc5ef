"""A knowledge store in the process's memory: no server, nothing kept after it closes.

For tests, demos and small knowledge bases that are ingested at start: every search
compares the query with every vector of the collection (numpy, exact cosine). It reads
structured filters only; a Milvus expression string is refused with ``invalid_request``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chat_handler.stores.base import (
    MAX_TEXTS,
    CollectionInfo,
    KnowledgeRecord,
    check_collection_name,
    check_dimension,
    check_query,
    check_texts_limit,
    vocabulary_json,
)
from handler_base.errors import InvalidRequestError, NotFoundError
from handler_base.filters import AllOf, AnyOf, FieldCondition, Filter, KnowledgeFilter, Not
from handler_base.messages import Source
from handler_base.settings import Settings

_MISSING = object()


@dataclass
class _Collection:
    records: dict[str, KnowledgeRecord] = field(default_factory=dict)
    unit_vectors: dict[str, np.ndarray] = field(default_factory=dict)
    vocabulary: list[str] | None = None


class InMemoryStore:
    """Knowledge records in a dict per collection; see the module doc.

    Safe to share between the coroutines of one event loop: no call awaits midway.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        """An empty store whose collections hold vectors of ``settings.embedding_dim``."""
        self._dim = (settings or Settings()).embedding_dim
        self._collections: dict[str, _Collection] = {}

    @property
    def dim(self) -> int:
        """The dimension of the collections this store creates."""
        return self._dim

    def __repr__(self) -> str:
        return f"InMemoryStore(dim={self._dim}, collections={len(self._collections)})"

    async def upsert(self, collection: str, records: Sequence[KnowledgeRecord]) -> list[str]:
        """See :meth:`KnowledgeStore.upsert`."""
        name = check_collection_name(collection)
        for record in records:
            check_dimension(name, self._dim, record.vector)
        if not records:
            return []
        stored = self._collections.setdefault(name, _Collection())
        for record in records:
            vector = np.asarray(record.vector, dtype=np.float32)
            stored.records[record.id] = record
            stored.unit_vectors[record.id] = vector / np.linalg.norm(vector)
        await asyncio.sleep(0)
        return [record.id for record in records]

    async def search(
        self,
        collection: str,
        vector: Sequence[float],
        top_k: int = 10,
        filter: KnowledgeFilter | None = None,
    ) -> list[Source]:
        """See :meth:`KnowledgeStore.search`."""
        name = check_collection_name(collection)
        query = check_query(vector, top_k)
        structured = _structured(filter)
        stored = self._collections.get(name)
        if stored is None:
            return []
        check_dimension(name, self._dim, query)
        ids = [
            i for i, r in stored.records.items() if structured is None or _matches(structured, r)
        ]
        if not ids:
            return []
        unit_query = np.asarray(query, dtype=np.float32)
        unit_query /= np.linalg.norm(unit_query)
        scores = np.stack([stored.unit_vectors[i] for i in ids]) @ unit_query
        best = np.argsort(-scores, kind="stable")[:top_k]
        return [stored.records[ids[n]].source(float(scores[n])) for n in best]

    async def delete(
        self,
        collection: str,
        ids: Sequence[str] | None = None,
        filter: KnowledgeFilter | None = None,
    ) -> int:
        """See :meth:`KnowledgeStore.delete`."""
        name = check_collection_name(collection)
        structured = _structured(filter)
        if ids is None and structured is None:
            raise InvalidRequestError("delete needs ids or a filter (drop the collection instead)")
        stored = self._collections.get(name)
        if stored is None:
            return 0
        chosen = stored.records.keys() if ids is None else set(ids) & stored.records.keys()
        doomed = [
            i for i in chosen if structured is None or _matches(structured, stored.records[i])
        ]
        for record_id in doomed:
            del stored.records[record_id]
            del stored.unit_vectors[record_id]
        return len(doomed)

    async def count(self, collection: str) -> int:
        """See :meth:`KnowledgeStore.count`."""
        name = check_collection_name(collection)
        if name not in self._collections:
            raise NotFoundError(f"collection {name!r} does not exist")
        return len(self._collections[name].records)

    async def collections(self) -> list[CollectionInfo]:
        """See :meth:`KnowledgeStore.collections`."""
        return [
            CollectionInfo(name=name, count=len(stored.records))
            for name, stored in sorted(self._collections.items())
        ]

    async def texts(self, collection: str, limit: int = MAX_TEXTS) -> list[str]:
        """See :meth:`KnowledgeStore.texts`."""
        name = check_collection_name(collection)
        check_texts_limit(limit)
        stored = self._collections.get(name)
        if stored is None:
            return []
        return [record.text for record in list(stored.records.values())[:limit]]

    async def vocabulary(self, collection: str) -> list[str] | None:
        """See :meth:`KnowledgeStore.vocabulary`."""
        name = check_collection_name(collection)
        if name not in self._collections:
            raise NotFoundError(f"collection {name!r} does not exist")
        kept = self._collections[name].vocabulary
        return None if kept is None else list(kept)

    async def set_vocabulary(self, collection: str, terms: Sequence[str]) -> bool:
        """See :meth:`KnowledgeStore.set_vocabulary`."""
        name = check_collection_name(collection)
        vocabulary_json(terms)
        stored = self._collections.get(name)
        if stored is None:
            return False
        stored.vocabulary = list(terms)
        return True

    async def drop_collection(self, collection: str) -> bool:
        """See :meth:`KnowledgeStore.drop_collection`."""
        return self._collections.pop(check_collection_name(collection), None) is not None

    def close(self) -> None:
        """Forget everything."""
        self._collections.clear()


def _structured(filter: KnowledgeFilter | None) -> Filter | None:
    if isinstance(filter, str):
        if not filter.strip():
            return None
        raise InvalidRequestError(
            "this knowledge store reads structured filters only "
            '(e.g. {"field": "doc_id", "op": "eq", "value": "a"}); '
            "a filter string is a Milvus expression"
        )
    return filter


def _matches(filter: Filter, record: KnowledgeRecord) -> bool:
    if isinstance(filter, AllOf):
        return all(_matches(f, record) for f in filter.all_)
    if isinstance(filter, AnyOf):
        return any(_matches(f, record) for f in filter.any_)
    if isinstance(filter, Not):
        return not _matches(filter.not_, record)
    return _holds(filter, _field_value(filter, record))


def _field_value(condition: FieldCondition, record: KnowledgeRecord) -> Any:
    path = condition.metadata_path
    if path is None:
        return getattr(record, condition.field)
    value: Any = record.metadata
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return _MISSING
        value = value[key]
    return value


def _same_kind(a: Any, b: Any) -> bool:
    """Whether Milvus compares ``a`` and ``b``: both text, both booleans, or both numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str)
    return isinstance(a, int | float) and isinstance(b, int | float)


def _holds(condition: FieldCondition, actual: Any) -> bool:
    op, value = condition.op, condition.value
    if actual is _MISSING or actual is None:
        return False
    if op == "contains":
        return isinstance(actual, list) and any(
            _same_kind(item, value) and item == value for item in actual
        )
    if isinstance(value, list):
        inside = any(_same_kind(actual, v) and actual == v for v in value)
        comparable = any(_same_kind(actual, v) for v in value) or not value
        return inside if op == "in" else comparable and not inside
    if not _same_kind(actual, value):
        return False
    comparisons: dict[str, bool] = {
        "eq": actual == value,
        "ne": actual != value,
        "lt": actual < value,
        "lte": actual <= value,
        "gt": actual > value,
        "gte": actual >= value,
    }
    return comparisons[op]
