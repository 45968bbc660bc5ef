"""One test-suite for every knowledge store: Milvus Lite and in memory answer alike.

Each test runs once per store (the ``store`` fixture). Where the stores differ on
purpose (a Milvus expression string), the test says which answers what. Vectors are
hand-made and 8-dimensional.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from chat_handler.stores import (
    CollectionInfo,
    InMemoryStore,
    KnowledgeRecord,
    KnowledgeStore,
    MilvusStore,
    milvus_expression,
)
from chat_handler.stores.base import MAX_TEXT_BYTES, MAX_TEXTS
from chat_handler.testing import SMALL_DIM, axis, lite_settings
from chat_handler.testing import chunk_record as chunk
from handler_base.errors import (
    ErrorCode,
    InvalidRequestError,
    NotFoundError,
    error_from_validation,
)
from handler_base.filters import MAX_FILTER_DEPTH, AllOf, FieldCondition, KnowledgeFilter, Not
from handler_base.rag import Document, chunk_document, record_id

DIM = SMALL_DIM
pytestmark = pytest.mark.integration

knowledge_filter: TypeAdapter[KnowledgeFilter] = TypeAdapter(KnowledgeFilter)


def where(json: Any) -> KnowledgeFilter:
    """The filter a request body would carry as ``json``."""
    return knowledge_filter.validate_python(json)


@pytest.fixture(params=["milvus", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KnowledgeStore]:
    settings = lite_settings(tmp_path / "data", embedding_dim=DIM)
    opened: KnowledgeStore = (
        MilvusStore(settings) if request.param == "milvus" else InMemoryStore(settings)
    )
    yield opened
    opened.close()


# --- Records (no store) ----------------------------------------------------------------------


def test_record_id_is_the_same_chunk_of_the_same_document() -> None:
    same = record_id("doc", 0, "text")
    assert same == chunk("text").id
    assert len(same) == 64
    assert all(c in "0123456789abcdef" for c in same)
    # Vector and metadata are not part of the identity.
    assert KnowledgeRecord(text="text", vector=axis(3), doc_id="doc", metadata={"a": 1}).id == same
    others = {record_id("other", 0, "text"), record_id("doc", 1, "text"), record_id("doc", 0, "x")}
    assert same not in others
    assert len(others) == 3
    # Field boundaries cannot be shifted to forge the same id.
    assert record_id("a", 0, "bc") != record_id("ab", 0, "c")


def test_a_chunk_becomes_a_knowledge_record() -> None:
    (piece,) = chunk_document(Document(id="d", text="Hello there."))
    record = KnowledgeRecord.of(piece, [0.5, 0.5])
    assert record.id == piece.id
    assert (record.doc_id, record.chunk_index, record.text) == ("d", 0, "Hello there.")


def test_record_limits_map_to_platform_errors() -> None:
    with pytest.raises(ValidationError) as too_big:
        KnowledgeRecord(text="é" * (MAX_TEXT_BYTES // 2 + 1), vector=axis(0), doc_id="d")
    assert error_from_validation(too_big.value).code is ErrorCode.TOO_LARGE

    bad: list[dict[str, Any]] = [
        {"text": "", "vector": axis(0), "doc_id": "d"},
        {"text": "t", "vector": [0.0] * DIM, "doc_id": "d"},
        {"text": "t", "vector": [math.nan] * DIM, "doc_id": "d"},
        {"text": "t", "vector": axis(0), "doc_id": ""},
        {"text": "t", "vector": axis(0), "doc_id": "d", "chunk_index": -1},
        {"text": "t", "vector": axis(0), "doc_id": "d", "metadata": {"doc_id": "x"}},
        {"text": "t", "vector": axis(0), "doc_id": "d", "metadata": {"when": object()}},
        {"text": "t", "vector": axis(0), "doc_id": "d", "surprise": 1},
    ]
    for fields in bad:
        with pytest.raises(ValidationError) as invalid:
            KnowledgeRecord(**fields)
        assert error_from_validation(invalid.value).code is ErrorCode.INVALID_REQUEST, fields


# --- Filters as data (no store) ---------------------------------------------------------------


def test_filters_are_validated_as_request_data() -> None:
    bad: list[Any] = [
        {"field": "title", "op": "eq", "value": "x"},  # metadata keys need `metadata.`
        {"field": "metadata.", "op": "eq", "value": "x"},
        {"field": "doc_id", "op": "like", "value": "x"},
        {"field": "doc_id", "op": "in", "value": "x"},
        {"field": "doc_id", "op": "in", "value": []},
        {"field": "doc_id", "op": "eq", "value": ["x"]},
        {"field": "chunk_index", "op": "lt", "value": "3"},
        {"field": "doc_id", "value": {"nested": "object"}},
        {"and": []},
        {"and": [{"field": "doc_id", "value": "a"}], "extra": 1},
    ]
    for json in bad:
        with pytest.raises(ValidationError) as invalid:
            where(json)
        assert error_from_validation(invalid.value).code is ErrorCode.INVALID_REQUEST, json

    deep: Any = {"field": "doc_id", "value": "a"}
    for _ in range(MAX_FILTER_DEPTH + 1):
        deep = {"not": deep}
    with pytest.raises(ValidationError, match="deeper"):
        where(deep)
    with pytest.raises(ValidationError) as too_big:
        where({"field": "doc_id", "op": "in", "value": ["x" * 50] * 100})
    assert error_from_validation(too_big.value).code is ErrorCode.TOO_LARGE


def test_filters_round_trip_through_json_with_their_keywords() -> None:
    json = {
        "and": [
            {"field": "metadata.lang", "op": "eq", "value": "en"},
            {"or": [{"not": {"field": "chunk_index", "op": "gte", "value": 3}}]},
        ]
    }
    parsed = where(json)
    assert knowledge_filter.dump_python(parsed, exclude_defaults=False) == json
    assert where('doc_id == "a"') == 'doc_id == "a"'  # a string stays a Milvus expression


def test_structured_filters_become_milvus_expressions() -> None:
    assert (
        milvus_expression(where({"field": "doc_id", "value": 'a "b"'})) == 'doc_id == "a \\"b\\""'
    )
    assert (
        milvus_expression(
            where(
                {
                    "or": [
                        {"field": "metadata.author.name", "op": "in", "value": ["x", "y"]},
                        {"not": {"field": "metadata.draft", "value": True}},
                    ]
                }
            )
        )
        == '(exists metadata["author"]["name"] and (metadata["author"]["name"] == "x" '
        'or metadata["author"]["name"] == "y")) '
        'or (not (exists metadata["draft"] and (metadata["draft"] == true)))'
    )


# --- Every store --------------------------------------------------------------------------------


async def test_upserting_the_same_chunk_twice_stores_it_once(store: KnowledgeStore) -> None:
    first = await store.upsert("kb", [chunk("alpha", index=0), chunk("beta", index=1, along=1)])
    assert await store.count("kb") == 2

    again = await store.upsert("kb", [chunk("alpha", index=0, lang="en")])
    assert again == [first[0]]
    assert await store.count("kb") == 2
    # The second upsert replaced the stored record: the new metadata is there.
    [best] = await store.search("kb", axis(0), top_k=1)
    assert best.id == first[0]
    assert best.metadata["lang"] == "en"

    # Duplicates within one call are stored once too; ids follow the input order.
    ids = await store.upsert("kb", [chunk("gamma"), chunk("gamma"), chunk("alpha")])
    assert ids == [record_id("doc", 0, "gamma")] * 2 + [first[0]]
    assert await store.count("kb") == 3


async def test_search_returns_the_nearest_first_with_cosine_scores(store: KnowledgeStore) -> None:
    await store.upsert(
        "kb",
        [
            chunk("exact", "a", 0, along=0),
            chunk("orthogonal", "b", 0, along=3),
            KnowledgeRecord(text="close", vector=axis(0, tilt=1.0), doc_id="c", metadata={"n": 1}),
        ],
    )
    results = await store.search("kb", axis(0), top_k=10)

    assert [s.text for s in results] == ["exact", "close", "orthogonal"]
    assert results[0].score == pytest.approx(1.0, abs=1e-5)
    assert results[1].score == pytest.approx(1 / math.sqrt(2), abs=1e-5)
    assert results[2].score == pytest.approx(0.0, abs=1e-5)
    assert results[1].metadata == {"doc_id": "c", "chunk_index": 0, "n": 1}
    assert results[0].id == record_id("a", 0, "exact")

    assert [s.text for s in await store.search("kb", axis(0), top_k=2)] == ["exact", "close"]


FILTER_CASES: list[tuple[Any, list[str]]] = [
    ({"field": "doc_id", "value": "guide"}, ["en one", "en two"]),
    ({"field": "doc_id", "op": "ne", "value": "guide"}, ["fr one", "number", "other"]),
    ({"field": "doc_id", "op": "in", "value": ["guide-fr", "nums"]}, ["fr one", "number"]),
    ({"field": "doc_id", "op": "not_in", "value": ["guide", "nums"]}, ["fr one", "other"]),
    ({"field": "chunk_index", "op": "gte", "value": 1}, ["en two"]),
    ({"field": "metadata.lang", "value": "fr"}, ["fr one"]),
    # A key a chunk lacks matches no condition, `ne` and `not_in` included ...
    ({"field": "metadata.lang", "op": "ne", "value": "en"}, ["fr one"]),
    ({"field": "metadata.lang", "op": "not_in", "value": ["en"]}, ["fr one"]),
    ({"field": "metadata.lang", "op": "in", "value": ["fr", "de"]}, ["fr one"]),
    # ... and `not` turns that round.
    ({"not": {"field": "metadata.lang", "value": "en"}}, ["fr one", "number"]),
    ({"field": "metadata.tags", "op": "contains", "value": "faq"}, ["en one"]),
    ({"field": "metadata.rank", "op": "lt", "value": 2.5}, ["number"]),
    ({"field": "metadata.rank", "op": "gt", "value": 2.5}, []),
    # A value of another type does not match.
    ({"field": "metadata.rank", "value": "2"}, []),
    ({"field": "metadata.draft", "value": True}, ["en two"]),
    ({"field": "metadata.author.name", "value": "Ada"}, ["en one"]),
    (
        {
            "and": [
                {"field": "doc_id", "value": "guide"},
                {"not": {"field": "chunk_index", "value": 0}},
            ]
        },
        ["en two"],
    ),
    (
        {"or": [{"field": "metadata.lang", "value": "fr"}, {"field": "doc_id", "value": "nums"}]},
        ["fr one", "number"],
    ),
    ({"field": "doc_id", "value": 'odd "doc"\\name\n'}, ["other"]),
    ({"field": "doc_id", "value": "nothing"}, []),
]


@pytest.mark.parametrize(("json", "expected"), FILTER_CASES, ids=lambda v: str(v)[:60])
async def test_structured_filters_select_the_same_chunks(
    store: KnowledgeStore, json: Any, expected: list[str]
) -> None:
    await store.upsert(
        "kb",
        [
            chunk("en one", "guide", 0, lang="en", tags=["faq"], author={"name": "Ada"}),
            chunk("en two", "guide", 1, along=1, lang="en", draft=True),
            chunk("fr one", "guide-fr", 0, lang="fr"),
            chunk("number", "nums", 0, rank=2),
            chunk("other", 'odd "doc"\\name\n', 0, lang="en"),
        ],
    )
    found = await store.search("kb", axis(0), filter=where(json))
    assert sorted(s.text for s in found) == expected


async def test_delete_by_id_by_filter_and_both(store: KnowledgeStore) -> None:
    ids = await store.upsert(
        "kb",
        [chunk(f"a{i}", "a", i, along=i) for i in range(3)]
        + [chunk(f"b{i}", "b", i, along=i) for i in range(3)],
    )
    assert await store.delete("kb", ids=[ids[0], "no-such-id"]) == 1
    assert await store.count("kb") == 5
    assert await store.delete("kb", ids=[]) == 0

    assert await store.delete("kb", filter=where({"field": "doc_id", "value": "b"})) == 3
    assert await store.count("kb") == 2
    assert await store.delete("kb", filter=where({"field": "doc_id", "value": "b"})) == 0

    # Both: only the listed ids that also match the filter.
    both = where({"field": "chunk_index", "value": 2})
    assert await store.delete("kb", ids=ids[1:3], filter=both) == 1
    assert [s.text for s in await store.search("kb", axis(1))] == ["a1"]

    with pytest.raises(InvalidRequestError, match="ids or a filter"):
        await store.delete("kb")


async def test_collections_with_exact_counts(store: KnowledgeStore) -> None:
    assert await store.collections() == []
    await store.upsert("alpha", [chunk("one"), chunk("two", index=1)])
    await store.upsert("beta", [chunk("one")])

    assert await store.collections() == [
        CollectionInfo(name="alpha", count=2),
        CollectionInfo(name="beta", count=1),
    ]
    assert await store.drop_collection("beta") is True
    assert await store.drop_collection("beta") is False
    assert [c.name for c in await store.collections()] == ["alpha"]


async def test_missing_collection_reads_as_empty_and_is_not_made(store: KnowledgeStore) -> None:
    assert await store.search("missing", axis(0)) == []
    with pytest.raises(NotFoundError, match="'missing' does not exist"):
        await store.count("missing")
    assert await store.delete("missing", ids=["x"]) == 0
    assert await store.delete("missing", filter=where({"field": "doc_id", "value": "x"})) == 0
    assert await store.collections() == []


async def test_wrong_dimension_is_a_clear_error(store: KnowledgeStore) -> None:
    await store.upsert("kb", [chunk("one")])
    short = KnowledgeRecord(text="short", vector=[1.0, 0.0, 0.0], doc_id="d")
    with pytest.raises(InvalidRequestError, match="8-dimensional vectors, got one of 3"):
        await store.upsert("kb", [chunk("fine", index=1), short])
    with pytest.raises(InvalidRequestError, match="8-dimensional vectors, got one of 3"):
        await store.search("kb", [1.0, 0.0, 0.0])
    with pytest.raises(InvalidRequestError, match="zeros"):
        await store.search("kb", [0.0] * DIM)
    assert await store.count("kb") == 1  # nothing of the refused batch was stored


async def test_bad_arguments(store: KnowledgeStore) -> None:
    for name in ["", "1abc", "has-dash", "a" * 256, "spaces here"]:
        with pytest.raises(InvalidRequestError, match="invalid collection name"):
            await store.search(name, axis(0))
        with pytest.raises(InvalidRequestError, match="invalid collection name"):
            await store.upsert(name, [chunk("one")])
    for top_k in (0, 16_385):
        with pytest.raises(InvalidRequestError, match="top_k"):
            await store.search("kb", axis(0), top_k=top_k)


async def test_a_milvus_expression_is_for_milvus_only(store: KnowledgeStore) -> None:
    await store.upsert("kb", [chunk("one", "a"), chunk("two", "b", along=1)])
    expression = 'doc_id == "b"'
    if isinstance(store, MilvusStore):
        assert [s.text for s in await store.search("kb", axis(0), filter=expression)] == ["two"]
    else:
        with pytest.raises(InvalidRequestError, match="structured filters only"):
            await store.search("kb", axis(0), filter=expression)
        with pytest.raises(InvalidRequestError, match="structured filters only"):
            await store.delete("kb", filter=expression)
    # Blank is no filter, for every store.
    assert len(await store.search("kb", axis(0), filter="  ")) == 2


async def test_filters_built_in_code_read_the_same_as_request_filters(
    store: KnowledgeStore,
) -> None:
    await store.upsert("kb", [chunk("one", "a"), chunk("two", "a", 1), chunk("three", "b")])
    built = AllOf(
        all_=[
            FieldCondition(field="doc_id", value="a"),
            Not(not_=FieldCondition(field="chunk_index", value=0)),
        ]
    )
    assert built == where(
        {"and": [{"field": "doc_id", "value": "a"}, {"not": {"field": "chunk_index", "value": 0}}]}
    )
    assert [s.text for s in await store.search("kb", axis(0), filter=built)] == ["two"]


# --- Texts and vocabulary -------------------------------------------------------------------------


async def test_texts_reads_the_chunks_of_a_collection(store: KnowledgeStore) -> None:
    await store.upsert("kb", [chunk("one", "a"), chunk("two", "a", 1), chunk("three", "b")])
    await store.upsert("other", [chunk("elsewhere")])
    assert sorted(await store.texts("kb")) == ["one", "three", "two"]
    assert len(await store.texts("kb", limit=2)) == 2
    assert await store.texts("missing") == []
    for limit in (0, MAX_TEXTS + 1):
        with pytest.raises(InvalidRequestError, match="limit"):
            await store.texts("kb", limit=limit)
    with pytest.raises(InvalidRequestError, match="invalid collection name"):
        await store.texts("has-dash")


async def test_a_collection_keeps_one_vocabulary_until_it_is_dropped(
    store: KnowledgeStore,
) -> None:
    await store.upsert("kb", [chunk("The ferry to Kelvington Island.")])
    assert await store.vocabulary("kb") is None  # never gathered

    terms = ["Kelvington Island", "Zoë Okafor", "ZX-41", "pier"]
    assert await store.set_vocabulary("kb", terms) is True
    assert await store.vocabulary("kb") == terms
    # Replaced whole, an empty one included; writes to records leave it alone.
    assert await store.set_vocabulary("kb", ["pier"]) is True
    await store.upsert("kb", [chunk("more", index=1)])
    await store.delete("kb", filter=where({"field": "chunk_index", "value": 1}))
    assert await store.vocabulary("kb") == ["pier"]
    assert await store.set_vocabulary("kb", []) is True
    assert await store.vocabulary("kb") == []

    # A missing collection keeps nothing and is not made.
    assert await store.set_vocabulary("missing", ["x"]) is False
    with pytest.raises(NotFoundError, match="'missing' does not exist"):
        await store.vocabulary("missing")
    assert [c.name for c in await store.collections()] == ["kb"]

    # Dropping the collection drops its vocabulary; a new one starts without.
    await store.set_vocabulary("kb", terms)
    await store.drop_collection("kb")
    with pytest.raises(NotFoundError):
        await store.vocabulary("kb")
    await store.upsert("kb", [chunk("again")])
    assert await store.vocabulary("kb") is None


async def test_a_bad_vocabulary_is_refused(store: KnowledgeStore) -> None:
    await store.upsert("kb", [chunk("one")])
    with pytest.raises(InvalidRequestError, match="non-empty strings"):
        await store.set_vocabulary("kb", ["fine", " "])
    with pytest.raises(InvalidRequestError, match="over the limit"):
        await store.set_vocabulary("kb", ["x" * 100] * 200)
    with pytest.raises(InvalidRequestError, match="invalid collection name"):
        await store.set_vocabulary("has-dash", ["x"])
    assert await store.vocabulary("kb") is None
