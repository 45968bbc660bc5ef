"""The Milvus knowledge store: chunks of documents and their embeddings in Milvus.

:class:`MilvusStore` talks to Milvus Lite by default (a database under the data folder,
``Settings.milvus_target``) or to a Milvus server named by ``MILVUS_URI`` or
``MILVUS_HOST``. Collections are made on first write with the configured dimension and a
COSINE index.

Every collection has the same schema, so filters read naturally:

========================  ============================================================
field                     what it holds
========================  ============================================================
``id``                    VARCHAR primary key: :func:`record_id` of the chunk
``vector``                FLOAT_VECTOR of the collection's dimension, COSINE index
``text``                  VARCHAR, the chunk's text (at most :data:`MAX_TEXT_BYTES`)
``doc_id``                VARCHAR, the document the chunk came from
``chunk_index``           INT64, the chunk's position in its document
``metadata``              JSON, everything else (title, path, language...)
========================  ============================================================

A collection's vocabulary (:meth:`MilvusStore.set_vocabulary`) is kept in its
properties, as the JSON list of :data:`VOCABULARY_PROPERTY`.

Structured filters (:mod:`handler_base.filters`) become Milvus expressions
(:func:`milvus_expression`). A filter string is passed to Milvus as written, e.g.
``doc_id == "guide"``, ``doc_id in ["a", "b"]``, ``chunk_index < 3``,
``metadata["lang"] == "en"``, ``json_contains(metadata["tags"], "faq")``; build string
literals with :func:`quote_string`. Dynamic fields are off: free-form keys live under
``metadata`` and can never collide with the fixed fields.

Milvus Lite lets one process open a database. Clients of one process that name the same
database share its embedded server, and their calls are serialized (Milvus Lite does
not take concurrent writes); the server stops when the last of them closes, which
releases the database for other processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeVar, overload

from chat_handler.stores.base import (
    CHUNK_INDEX_FIELD,
    DOC_ID_FIELD,
    MAX_DOC_ID_BYTES,
    MAX_TEXT_BYTES,
    MAX_TEXTS,
    CollectionInfo,
    KnowledgeRecord,
    check_collection_name,
    check_dimension,
    check_query,
    check_texts_limit,
    vocabulary_json,
)
from handler_base.errors import (
    InternalError,
    InvalidRequestError,
    NotFoundError,
    PlatformError,
    RequestTimeoutError,
    UnavailableError,
)
from handler_base.filters import AllOf, AnyOf, FieldCondition, Filter, KnowledgeFilter, Not, Scalar
from handler_base.messages import Source
from handler_base.settings import Settings

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

ID_FIELD: Final = "id"
VECTOR_FIELD: Final = "vector"
TEXT_FIELD: Final = "text"
METADATA_FIELD: Final = "metadata"
_OUTPUT_FIELDS: Final = [TEXT_FIELD, DOC_ID_FIELD, CHUNK_INDEX_FIELD, METADATA_FIELD]

VOCABULARY_PROPERTY: Final = "knowledge.vocabulary"
"""The collection property that keeps its vocabulary, a JSON list of terms."""

ID_LENGTH: Final = 64
"""Characters of a record id (a SHA-256 in hex)."""
UPSERT_BATCH_SIZE: Final = 256
"""Records sent in one upsert request (keeps requests well under gRPC's message limit)."""
DEFAULT_TIMEOUT_S: Final = 30.0

_COUNT: Final = "count(*)"
_STRONG: Final = "Strong"
_COLLECTION_NOT_FOUND_CODE: Final = 100
_LEGACY_COLLECTION_NOT_EXISTS_CODE: Final = 4
_CONNECT_FAILED_CODE: Final = 2
# Status codes that mean "the request is wrong": the legacy illegal-argument family
# (Milvus Lite answers 6 for a malformed filter) and the server's ParameterInvalid range.
_INPUT_ERROR_CODES: Final = frozenset({5, 6, 7, 1100, 1101, 1102})


class _DropRpcErrorLogs(logging.Filter):
    """Drop pymilvus's log of each failed call.

    pymilvus writes every failed call, a user's malformed filter included, with a
    traceback to its own stderr handler. This client raises each failure as a platform
    error chained to the pymilvus exception, so the caller decides what to log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.funcName != "_log_rpc_error"


@functools.cache
def _pymilvus() -> Any:
    """pymilvus, imported on first use.

    Importing it takes seconds (it loads pandas); programs that import
    ``handler_base.clients`` for another client should not pay for it.
    """
    module = importlib.import_module("pymilvus")
    logging.getLogger("pymilvus.decorators").addFilter(_DropRpcErrorLogs())
    return module


# --- Filters ---------------------------------------------------------------------------


def quote_string(value: str) -> str:
    """A Milvus filter string literal for ``value``, quoted and escaped.

    Example: ``f"doc_id == {quote_string(doc_id)}"``.
    """
    escaped = (
        value.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


_COMPARISONS: Final = {"eq": "==", "ne": "!=", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}


def milvus_expression(filter: KnowledgeFilter | None) -> str:
    """The Milvus boolean expression of a filter ("" for none); a string is taken as written."""
    if filter is None:
        return ""
    if isinstance(filter, str):
        return filter.strip()
    return _expression(filter)


def _expression(filter: Filter) -> str:
    if isinstance(filter, AllOf):
        return " and ".join(f"({_expression(f)})" for f in filter.all_)
    if isinstance(filter, AnyOf):
        return " or ".join(f"({_expression(f)})" for f in filter.any_)
    if isinstance(filter, Not):
        return f"not ({_expression(filter.not_)})"
    return _condition(filter)


def _condition(condition: FieldCondition) -> str:
    path = condition.metadata_path
    field = (
        condition.field
        if path is None
        else METADATA_FIELD + "".join(f"[{quote_string(key)}]" for key in path)
    )
    value = condition.value
    if condition.op == "contains":
        if path is None:
            raise InvalidRequestError(f"'contains' needs a metadata list, not {condition.field!r}")
        expression = f"json_contains({field}, {_literal(value)})"
    elif isinstance(value, list):
        if path is None:
            expression = f"{field} {condition.op.replace('_', ' ')} {_literal(value)}"
        else:  # Milvus takes `in` on plain fields only.
            expression = " or ".join(f"{field} == {_literal(v)}" for v in value)
            if condition.op == "not_in":
                expression = f"not ({expression})"
    else:
        expression = f"{field} {_COMPARISONS[condition.op]} {_literal(value)}"
    if path is None:
        return expression
    # Milvus compares a missing key as null, which `not` keeps null; the contract says a
    # condition on a missing key is false, so that `not` makes it true.
    return f"exists {field} and ({expression})"


def _literal(value: Scalar | list[Scalar]) -> str:
    if isinstance(value, list):
        return f"[{', '.join(_literal(v) for v in value)}]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return quote_string(value)
    return repr(value)


# --- Milvus Lite: one embedded server per database, shared within the process -------------


@dataclass
class _LiteDatabase:
    """The process's claim on one Milvus Lite database."""

    path: str
    lock: threading.RLock = field(default_factory=threading.RLock)
    """Serializes every call on this database: Milvus Lite takes no concurrent writes."""
    users: int = 0
    """Open clients; the embedded server stops when it drops to zero."""


_lite_databases: dict[str, _LiteDatabase] = {}
_lite_databases_lock = threading.Lock()


def _lite_database(path: str) -> _LiteDatabase:
    key = str(Path(path).expanduser().resolve())
    with _lite_databases_lock:
        return _lite_databases.setdefault(key, _LiteDatabase(key))


def _stop_lite_server(path: str) -> None:
    # pymilvus starts the embedded server through this same module-level manager.
    server_manager = importlib.import_module("milvus_lite.server_manager")
    server_manager.server_manager_instance.release_server(path)


# --- The client ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Collection:
    """What the client learned about an existing collection on first use."""

    dim: int | None
    problem: str | None
    """Why the collection cannot hold knowledge records, or None when it can."""


class MilvusStore:
    """Async knowledge store over Milvus Lite or a Milvus server.

    The client connects on first use, so building one does no I/O and never fails for
    an unreachable server; :meth:`connect` connects eagerly. pymilvus is synchronous:
    each call runs in a worker thread (``asyncio.to_thread``), so the event loop never
    blocks and a client can be used from any loop.

    Errors are the platform's: a malformed filter, a vector of the wrong dimension or a
    bad collection name raise :class:`InvalidRequestError`; an unreachable server, or a
    Milvus Lite database that another process holds, :class:`UnavailableError`.

    Example::

        async with MilvusStore(Settings()) as store:
            await store.upsert("default", [KnowledgeRecord(text=..., vector=..., doc_id="a")])
            sources = await store.search("default", query_vector, top_k=5)
    """

    def __init__(
        self, settings: Settings | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        """Describe the connection; nothing is opened yet.

        Args:
            settings: Where Milvus is (``milvus_target``), its token and database, and
                the dimension of new collections (``embedding_dim``).
            timeout_s: Deadline of each Milvus call, retries included.

        Raises:
            ValueError: ``MILVUS_URI`` names a local file that does not end in ``.db``.
        """
        self._settings = settings if settings is not None else Settings()
        self._target = self._settings.milvus_target
        self._timeout_s = timeout_s
        self._lite: _LiteDatabase | None = None
        if self._settings.milvus_is_lite:
            if not self._target.endswith(".db"):
                raise ValueError(
                    f"MILVUS_URI {self._target!r} is neither a server URL "
                    "(http://host:19530) nor a Milvus Lite database path ending in .db"
                )
            self._lite = _lite_database(self._target)
        self._milvus: Any = None
        self._closed = False
        self._state_lock = threading.RLock()
        self._collections: dict[str, _Collection] = {}

    @property
    def dim(self) -> int:
        """The dimension of the collections this client creates."""
        return self._settings.embedding_dim

    @property
    def is_lite(self) -> bool:
        """True when the store is an embedded Milvus Lite database."""
        return self._lite is not None

    @property
    def target(self) -> str:
        """The Milvus Lite database path or the server URL (never a secret)."""
        return self._target

    def __repr__(self) -> str:
        return f"MilvusStore(target={self._target!r}, dim={self.dim})"

    # --- Lifecycle ----------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect now instead of on first use.

        Raises:
            UnavailableError: Milvus cannot be reached, or another process holds the
                Milvus Lite database.
        """
        await self._run(lambda _milvus: None, operation="connect")

    def close(self) -> None:
        """Close the connection; the last client of a Milvus Lite database stops its server.

        Safe to call more than once. Calls made after it raise :class:`UnavailableError`.
        """
        with self._database_lock(), self._state_lock:
            if self._closed:
                return
            self._closed = True
            milvus, self._milvus = self._milvus, None
            self._collections.clear()
            if milvus is None:
                return
            try:
                milvus.close()
            except Exception:
                logger.warning("closing the Milvus connection failed", exc_info=True)
            if self._lite is not None:
                self._lite.users -= 1
                if self._lite.users == 0:
                    _stop_lite_server(self._lite.path)
                    logger.info("Milvus Lite database closed: %s", self._lite.path)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.close)

    # --- Public API -----------------------------------------------------------------------

    async def upsert(self, collection: str, records: Sequence[KnowledgeRecord]) -> list[str]:
        """Store records, replacing any with the same id; make the collection if missing.

        Batches of :data:`UPSERT_BATCH_SIZE` are sent one after another; a failure can
        leave the earlier batches stored (upserting again is harmless).

        Args:
            collection: The collection's name.
            records: The chunks to store; their vectors must match the collection's
                dimension.

        Returns:
            The id of each record, in the order given.

        Raises:
            InvalidRequestError: Bad collection name, or a vector of the wrong dimension.
        """
        name = check_collection_name(collection)
        rows = list({record.id: _row(record) for record in records}.values())
        ids = [record.id for record in records]
        if not rows:
            return ids

        def upsert(milvus: Any) -> list[str]:
            info = self._open_collection(milvus, name, create=True)
            for row in rows:
                self._check_dimension(name, info, row[VECTOR_FIELD])
            for start in range(0, len(rows), UPSERT_BATCH_SIZE):
                batch = rows[start : start + UPSERT_BATCH_SIZE]
                milvus.upsert(name, batch, timeout=self._timeout_s)
            return ids

        return await self._run(upsert, collection=name, operation="upsert")

    async def search(
        self,
        collection: str,
        vector: Sequence[float],
        top_k: int = 10,
        filter: KnowledgeFilter | None = None,
        *,
        missing_ok: bool = True,
    ) -> list[Source]:
        """The chunks nearest to ``vector``, best first.

        Args:
            collection: The collection's name.
            vector: The query embedding, of the collection's dimension.
            top_k: How many chunks to return at most (1 to ``MAX_SEARCH_TOP_K``).
            filter: A structured filter, or a Milvus boolean expression over the fields
                (see the module doc); None or blank for no filter.
            missing_ok: What a collection that does not exist gives: an empty list when
                True (what RAG wants: no sources), :class:`NotFoundError` when False.

        Returns:
            Sources with ``score`` the cosine similarity (1 is the same direction) and
            ``metadata`` the record's metadata plus ``doc_id`` and ``chunk_index``.

        Raises:
            InvalidRequestError: Bad name, ``top_k``, vector or filter expression.
            NotFoundError: The collection does not exist and ``missing_ok`` is False.
        """
        name = check_collection_name(collection)
        query = check_query(vector, top_k)
        expression = milvus_expression(filter)

        def search(milvus: Any) -> list[Source]:
            info = self._open_collection(milvus, name, create=False)
            if info is None:
                if missing_ok:
                    logger.debug("search in missing collection %r: no results", name)
                    return []
                raise _not_found(name)
            self._check_dimension(name, info, query)
            hits = milvus.search(
                name,
                data=[query],
                limit=top_k,
                filter=expression,
                output_fields=_OUTPUT_FIELDS,
                timeout=self._timeout_s,
            )
            return [_source(hit) for hit in hits[0]] if hits else []

        return await self._run(search, collection=name, operation="search", filter=expression)

    async def delete(
        self,
        collection: str,
        ids: Sequence[str] | None = None,
        filter: KnowledgeFilter | None = None,
    ) -> int:
        """Delete records by id, by filter, or both (records that match both).

        Deleting a whole document: ``filter=FieldCondition(field="doc_id", value=doc_id)``.
        A collection that does not exist holds nothing to delete: the answer is 0.

        Args:
            collection: The collection's name.
            ids: Record ids to delete.
            filter: A structured filter or a Milvus expression selecting the records.

        Returns:
            How many records were deleted.

        Raises:
            InvalidRequestError: Neither ids nor filter given, or a bad filter.
        """
        name = check_collection_name(collection)
        user_filter = milvus_expression(filter)
        if ids is None and not user_filter:
            raise InvalidRequestError("delete needs ids or a filter (drop the collection instead)")
        expression = user_filter
        if ids is not None:
            if not ids:
                return 0
            by_id = f"{ID_FIELD} in [{', '.join(quote_string(i) for i in ids)}]"
            expression = f"({by_id}) and ({user_filter})" if user_filter else by_id

        def delete(milvus: Any) -> int:
            if self._open_collection(milvus, name, create=False) is None:
                return 0
            matching = self._count(milvus, name, expression)
            if matching:
                milvus.delete(name, filter=expression, timeout=self._timeout_s)
            return matching

        return await self._run(delete, collection=name, operation="delete", filter=user_filter)

    async def count(self, collection: str) -> int:
        """The exact number of records in a collection, writes so far included.

        Raises:
            NotFoundError: The collection does not exist.
        """
        name = check_collection_name(collection)

        def count(milvus: Any) -> int:
            if self._open_collection(milvus, name, create=False) is None:
                raise _not_found(name)
            return self._count(milvus, name, "")

        return await self._run(count, collection=name, operation="count")

    async def collections(self) -> list[CollectionInfo]:
        """Every collection of the database with its exact count, sorted by name."""

        def collections(milvus: Any) -> list[CollectionInfo]:
            infos = []
            for name in sorted(milvus.list_collections(timeout=self._timeout_s)):
                try:
                    if self._open_collection(milvus, name, create=False) is not None:
                        count = self._count(milvus, name, "")
                        infos.append(CollectionInfo(name=name, count=count))
                except _pymilvus().exceptions.MilvusException as exc:
                    if not _is_collection_not_found(exc):
                        raise
                    with self._state_lock:  # dropped by another client meanwhile
                        self._collections.pop(name, None)
            return infos

        return await self._run(collections, operation="list collections")

    async def texts(self, collection: str, limit: int = MAX_TEXTS) -> list[str]:
        """The texts of up to ``limit`` chunks of a collection; none from a missing one.

        Raises:
            InvalidRequestError: Bad name or ``limit``, or not a knowledge collection.
        """
        name = check_collection_name(collection)
        check_texts_limit(limit)

        def texts(milvus: Any) -> list[str]:
            info = self._open_collection(milvus, name, create=False)
            if info is None:
                return []
            if info.problem is not None:
                raise InvalidRequestError(f"collection {name!r} {info.problem}")
            rows = milvus.query(
                name,
                filter="",
                output_fields=[TEXT_FIELD],
                limit=limit,
                consistency_level=_STRONG,
                timeout=self._timeout_s,
            )
            return [str(row.get(TEXT_FIELD) or "") for row in rows]

        return await self._run(texts, collection=name, operation="read texts")

    async def vocabulary(self, collection: str) -> list[str] | None:
        """The vocabulary kept in the collection's properties; None when none was kept.

        Raises:
            NotFoundError: The collection does not exist.
        """
        name = check_collection_name(collection)

        def vocabulary(milvus: Any) -> list[str] | None:
            if self._open_collection(milvus, name, create=False) is None:
                raise _not_found(name)
            description = milvus.describe_collection(name, timeout=self._timeout_s)
            kept = (description.get("properties") or {}).get(VOCABULARY_PROPERTY)
            if kept is None:
                return None
            try:
                terms = json.loads(kept)
            except ValueError:
                logger.warning("collection %r has a vocabulary that is not JSON", name)
                return None
            return [t for t in terms if isinstance(t, str)] if isinstance(terms, list) else None

        return await self._run(vocabulary, collection=name, operation="read vocabulary")

    async def set_vocabulary(self, collection: str, terms: Sequence[str]) -> bool:
        """Keep ``terms`` in the collection's properties; False when it does not exist.

        Raises:
            InvalidRequestError: Bad name, or a vocabulary over its byte limit.
        """
        name = check_collection_name(collection)
        encoded = vocabulary_json(terms)

        def keep(milvus: Any) -> bool:
            if self._open_collection(milvus, name, create=False) is None:
                return False
            milvus.alter_collection_properties(
                name, properties={VOCABULARY_PROPERTY: encoded}, timeout=self._timeout_s
            )
            return True

        return await self._run(keep, collection=name, operation="keep vocabulary")

    async def has_collection(self, collection: str) -> bool:
        """True when the collection exists."""
        name = check_collection_name(collection)
        return await self._run(
            lambda milvus: self._open_collection(milvus, name, create=False) is not None,
            collection=name,
            operation="has_collection",
        )

    async def ensure_collection(self, collection: str) -> None:
        """Make the collection now if it does not exist (upsert does it on its own)."""
        name = check_collection_name(collection)
        await self._run(
            lambda milvus: self._open_collection(milvus, name, create=True),
            collection=name,
            operation="create collection",
        )

    async def drop_collection(self, collection: str) -> bool:
        """Delete a collection and everything in it.

        Returns:
            True when it existed.
        """
        name = check_collection_name(collection)

        def drop(milvus: Any) -> bool:
            with self._state_lock:
                self._collections.pop(name, None)
            if not milvus.has_collection(name, timeout=self._timeout_s):
                return False
            milvus.drop_collection(name, timeout=self._timeout_s)
            logger.info("dropped collection %r", name)
            return True

        return await self._run(drop, collection=name, operation="drop collection")

    # --- Calls: one worker thread each, serialized on Milvus Lite --------------------------

    async def _run(
        self,
        call: Callable[[Any], _T],
        *,
        collection: str | None = None,
        operation: str,
        filter: str = "",
    ) -> _T:
        return await asyncio.to_thread(
            self._call, call, collection=collection, operation=operation, filter=filter
        )

    def _call(
        self,
        call: Callable[[Any], _T],
        *,
        collection: str | None,
        operation: str,
        filter: str,
    ) -> _T:
        with self._database_lock():
            try:
                milvus = self._connection()
                try:
                    return call(milvus)
                except _pymilvus().exceptions.MilvusException as exc:
                    if collection is None or not _is_collection_not_found(exc):
                        raise
                    # Dropped behind our back by another client: forget what we knew of
                    # it and run the call again, which now sees it missing (or makes it).
                    with self._state_lock:
                        self._collections.pop(collection, None)
                    return call(milvus)
            except PlatformError:
                raise
            except Exception as exc:
                translated = _translate(exc, collection, operation, filter)
                if translated is None:
                    raise
                raise translated from exc

    @contextlib.contextmanager
    def _database_lock(self) -> Iterator[None]:
        if self._lite is None:
            yield
        else:
            with self._lite.lock:
                yield

    def _connection(self) -> Any:
        with self._state_lock:
            if self._closed:
                raise UnavailableError("the Milvus client is closed")
            if self._milvus is None:
                self._milvus = self._open()
            return self._milvus

    def _open(self) -> Any:
        settings = self._settings
        token = settings.milvus_token.get_secret_value() if settings.milvus_token else ""
        if self._lite is not None:
            Path(self._lite.path).parent.mkdir(parents=True, exist_ok=True)
        pymilvus = _pymilvus()
        try:
            milvus = pymilvus.MilvusClient(
                uri=self._lite.path if self._lite is not None else self._target,
                token=token,
                db_name=settings.milvus_db_name,
                timeout=self._timeout_s,
                dedicated=True,
            )
        except pymilvus.exceptions.ConnectionConfigException as exc:
            if self._lite is not None:
                raise UnavailableError(
                    f"cannot open the Milvus Lite database {self._lite.path}: another "
                    "process probably has it open (Milvus Lite allows one process per "
                    "database; reach it through that process, or use a Milvus server)"
                ) from exc
            raise UnavailableError(
                f"cannot connect to Milvus at {self._target}: {exc.message}"
            ) from exc
        except pymilvus.exceptions.MilvusException as exc:
            raise UnavailableError(
                f"cannot connect to Milvus at {self._target}: {exc.message}"
            ) from exc
        if self._lite is not None:
            self._lite.users += 1
        logger.info("connected to Milvus at %s", self._target)
        return milvus

    # --- Collections ----------------------------------------------------------------------

    @overload
    def _open_collection(self, milvus: Any, name: str, *, create: Literal[True]) -> _Collection: ...

    @overload
    def _open_collection(
        self, milvus: Any, name: str, *, create: Literal[False]
    ) -> _Collection | None: ...

    def _open_collection(self, milvus: Any, name: str, *, create: bool) -> _Collection | None:
        """Learn about (and load) a collection once; make it when ``create`` is set.

        Returns:
            What the collection holds, or None when it does not exist.
        """
        with self._state_lock:
            known = self._collections.get(name)
            if known is not None:
                return known
            if milvus.has_collection(name, timeout=self._timeout_s):
                info = _describe(milvus.describe_collection(name, timeout=self._timeout_s))
                state = milvus.get_load_state(name, timeout=self._timeout_s).get("state")
                if str(state) != "Loaded":
                    milvus.load_collection(name, timeout=self._timeout_s)
            elif create:
                self._create_collection(milvus, name)
                info = _Collection(dim=self.dim, problem=None)
            else:
                return None
            self._collections[name] = info
            return info

    def _create_collection(self, milvus: Any, name: str) -> None:
        pymilvus = _pymilvus()
        schema = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(ID_FIELD, pymilvus.DataType.VARCHAR, is_primary=True, max_length=ID_LENGTH)
        schema.add_field(VECTOR_FIELD, pymilvus.DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field(TEXT_FIELD, pymilvus.DataType.VARCHAR, max_length=MAX_TEXT_BYTES)
        schema.add_field(DOC_ID_FIELD, pymilvus.DataType.VARCHAR, max_length=MAX_DOC_ID_BYTES)
        schema.add_field(CHUNK_INDEX_FIELD, pymilvus.DataType.INT64)
        schema.add_field(METADATA_FIELD, pymilvus.DataType.JSON)
        index = pymilvus.MilvusClient.prepare_index_params()
        index.add_index(field_name=VECTOR_FIELD, index_type="AUTOINDEX", metric_type="COSINE")
        try:
            milvus.create_collection(
                name, schema=schema, consistency_level=_STRONG, timeout=self._timeout_s
            )
        except pymilvus.exceptions.MilvusException:
            # Another client (of a Milvus server) may have made it first.
            if not milvus.has_collection(name, timeout=self._timeout_s):
                raise
        else:
            # Not through create_collection(index_params=...): that polls the index state
            # every 0.5 s, although an index on an empty collection is ready at once.
            milvus.create_index(name, index, timeout=self._timeout_s, sync=False)
        milvus.load_collection(name, timeout=self._timeout_s)
        logger.info("created collection %r (dim %d, COSINE)", name, self.dim)

    @staticmethod
    def _check_dimension(name: str, info: _Collection, vector: Sequence[float]) -> None:
        if info.problem is not None:
            raise InvalidRequestError(f"collection {name!r} {info.problem}")
        check_dimension(name, info.dim, vector)

    def _count(self, milvus: Any, name: str, expression: str) -> int:
        rows = milvus.query(
            name,
            filter=expression,
            output_fields=[_COUNT],
            consistency_level=_STRONG,
            timeout=self._timeout_s,
        )
        return int(rows[0][_COUNT]) if rows else 0


# --- Helpers ---------------------------------------------------------------------------


def _describe(description: dict[str, Any]) -> _Collection:
    fields = {f["name"]: f for f in description.get("fields", [])}
    missing = [
        f
        for f in (ID_FIELD, VECTOR_FIELD, TEXT_FIELD, DOC_ID_FIELD, CHUNK_INDEX_FIELD)
        if f not in fields
    ]
    problem = f"is not a knowledge collection (no {', '.join(missing)} field)" if missing else None
    vector = fields.get(VECTOR_FIELD)
    dim = vector.get("params", {}).get("dim") if vector else None
    return _Collection(dim=int(dim) if dim is not None else None, problem=problem)


def _row(record: KnowledgeRecord) -> dict[str, Any]:
    """The record as a Milvus row of the knowledge schema."""
    return {
        ID_FIELD: record.id,
        VECTOR_FIELD: record.vector,
        TEXT_FIELD: record.text,
        DOC_ID_FIELD: record.doc_id,
        CHUNK_INDEX_FIELD: record.chunk_index,
        METADATA_FIELD: record.metadata,
    }


def _source(hit: Any) -> Source:
    entity: dict[str, Any] = hit.get("entity", {})
    metadata = {
        DOC_ID_FIELD: entity.get(DOC_ID_FIELD),
        CHUNK_INDEX_FIELD: entity.get(CHUNK_INDEX_FIELD),
        **(entity.get(METADATA_FIELD) or {}),
    }
    return Source(
        id=str(hit["id"]),
        text=entity.get(TEXT_FIELD) or "",
        score=float(hit["distance"]),
        metadata=metadata,
    )


def _not_found(name: str) -> NotFoundError:
    return NotFoundError(f"collection {name!r} does not exist")


def _is_collection_not_found(exc: Exception) -> bool:
    return isinstance(exc, _pymilvus().exceptions.MilvusException) and (
        exc.code == _COLLECTION_NOT_FOUND_CODE
        or exc.compatible_code == _LEGACY_COLLECTION_NOT_EXISTS_CODE
    )


def _grpc_status_name(exc: Exception) -> str | None:
    """The gRPC status name of a transport failure, which pymilvus passes on as a code."""
    code: Any = getattr(exc, "code", None)
    if callable(code):  # a raw grpc.RpcError
        code = code()
    name = getattr(code, "name", None)
    return name if isinstance(name, str) and not isinstance(code, int) else None


def _translate(
    exc: Exception, collection: str | None, operation: str, filter: str
) -> PlatformError | None:
    """The platform error for a pymilvus failure, or None to let it propagate as is."""
    status = _grpc_status_name(exc)
    if status == "DEADLINE_EXCEEDED":
        return RequestTimeoutError(f"Milvus {operation} took longer than its deadline")
    if status is not None:
        return UnavailableError(f"Milvus is unavailable ({status}) during {operation}")
    errors = _pymilvus().exceptions
    if not isinstance(exc, errors.MilvusException):
        return None
    if exc.code == _CONNECT_FAILED_CODE or isinstance(exc, errors.ConnectionConfigException):
        return UnavailableError(f"Milvus is unavailable during {operation}: {exc.message}")
    if _is_collection_not_found(exc) and collection is not None:
        return _not_found(collection)
    if (
        exc.is_input_error
        or isinstance(exc, errors.ParamError)
        or exc.code in _INPUT_ERROR_CODES
        or exc.compatible_code in _INPUT_ERROR_CODES
    ):
        if filter:
            return InvalidRequestError(f"invalid filter expression {filter!r}: {exc.message}")
        return InvalidRequestError(f"Milvus rejected the {operation}: {exc.message}")
    return InternalError(f"Milvus {operation} failed: {exc.message}")
