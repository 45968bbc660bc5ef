"""MilvusClient against real Milvus Lite (and Milvus Lite's gRPC server as a "server").

Nothing is mocked. Vectors are hand-made and 8-dimensional to keep the tests fast.
"""

from __future__ import annotations

import asyncio
import math
import socket
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from handler_base.clients.milvus import (
    MAX_TEXT_BYTES,
    UPSERT_BATCH_SIZE,
    CollectionInfo,
    KnowledgeRecord,
    MilvusClient,
    quote_string,
    record_id,
)
from handler_base.errors import (
    ErrorCode,
    InvalidRequestError,
    NotFoundError,
    UnavailableError,
    error_from_validation,
)
from handler_base.settings import Settings
from handler_base.testing.milvus_fixtures import lite_settings

DIM = 8
pytestmark = pytest.mark.integration


def axis(i: int, *, tilt: float = 0.0) -> list[float]:
    """The unit vector along axis ``i``, optionally tilted towards the next axis."""
    vector = [0.0] * DIM
    vector[i] = 1.0
    vector[(i + 1) % DIM] = tilt
    return vector


def chunk(
    text: str, doc_id: str = "doc", index: int = 0, *, along: int = 0, **metadata: Any
) -> KnowledgeRecord:
    return KnowledgeRecord(
        text=text, vector=axis(along), doc_id=doc_id, chunk_index=index, metadata=metadata
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return lite_settings(tmp_path / "data", embedding_dim=DIM)


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[MilvusClient]:
    client = MilvusClient(settings)
    yield client
    client.close()


# --- Records (no Milvus) -------------------------------------------------------------------


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


def test_settings_that_name_no_database_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.db"):
        MilvusClient(Settings(milvus_uri=str(tmp_path / "milvus")))


# --- Milvus Lite ---------------------------------------------------------------------------


async def test_upserting_the_same_chunk_twice_stores_it_once(store: MilvusClient) -> None:
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


async def test_search_returns_the_nearest_first_with_cosine_scores(store: MilvusClient) -> None:
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


async def test_filters_keep_other_documents_out(store: MilvusClient) -> None:
    await store.upsert(
        "kb",
        [
            chunk("en one", "guide", 0, along=0, lang="en", tags=["faq"]),
            chunk("en two", "guide", 1, along=1, lang="en"),
            chunk("fr one", "guide-fr", 0, along=0, lang="fr"),
            chunk("other", 'odd "doc"\\name\n', 0, along=0, lang="en"),
        ],
    )

    async def texts(expression: str) -> list[str]:
        return sorted(s.text for s in await store.search("kb", axis(0), filter=expression))

    assert await texts('doc_id == "guide"') == ["en one", "en two"]
    assert await texts('metadata["lang"] == "fr"') == ["fr one"]
    assert await texts('doc_id == "guide" and chunk_index >= 1') == ["en two"]
    assert await texts('json_contains(metadata["tags"], "faq")') == ["en one"]
    odd = 'odd "doc"\\name\n'
    assert await texts(f"doc_id == {quote_string(odd)}") == ["other"]
    assert await texts(f"doc_id == {quote_string(odd[:-1])}") == []
    assert await texts("   ") == ["en one", "en two", "fr one", "other"]


async def test_delete_by_id_by_filter_and_both(store: MilvusClient) -> None:
    ids = await store.upsert(
        "kb",
        [chunk(f"a{i}", "a", i, along=i) for i in range(3)]
        + [chunk(f"b{i}", "b", i, along=i) for i in range(3)],
    )
    assert await store.delete("kb", ids=[ids[0], "no-such-id"]) == 1
    assert await store.count("kb") == 5
    assert await store.delete("kb", ids=[]) == 0

    assert await store.delete("kb", filter=f"doc_id == {quote_string('b')}") == 3
    assert await store.count("kb") == 2
    assert await store.delete("kb", filter='doc_id == "b"') == 0

    # Both: only the listed ids that also match the filter.
    assert await store.delete("kb", ids=ids[1:3], filter="chunk_index == 2") == 1
    assert [s.text for s in await store.search("kb", axis(1))] == ["a1"]

    with pytest.raises(InvalidRequestError, match="ids or a filter"):
        await store.delete("kb")


async def test_list_collections_with_exact_counts(store: MilvusClient) -> None:
    assert await store.list_collections() == []
    await store.upsert("alpha", [chunk("one"), chunk("two", index=1)])
    await store.upsert("beta", [chunk("one")])
    await store.ensure_collection("empty")

    assert await store.list_collections() == [
        CollectionInfo(name="alpha", count=2),
        CollectionInfo(name="beta", count=1),
        CollectionInfo(name="empty", count=0),
    ]
    assert await store.drop_collection("beta") is True
    assert await store.drop_collection("beta") is False
    assert [c.name for c in await store.list_collections()] == ["alpha", "empty"]


async def test_data_outlives_the_client(settings: Settings) -> None:
    client = MilvusClient(settings)
    ids = await client.upsert("kb", [chunk("kept", along=2), chunk("gone", index=1)])
    await client.delete("kb", ids=[ids[1]])
    client.close()
    client.close()  # closing twice is harmless
    with pytest.raises(UnavailableError, match="closed"):
        await client.count("kb")

    async with MilvusClient(settings) as reopened:
        assert await reopened.count("kb") == 1
        [hit] = await reopened.search("kb", axis(2))
        assert (hit.id, hit.text) == (ids[0], "kept")
        assert await reopened.list_collections() == [CollectionInfo(name="kb", count=1)]


async def test_missing_collection(store: MilvusClient) -> None:
    assert await store.search("missing", axis(0)) == []
    with pytest.raises(NotFoundError, match="'missing' does not exist"):
        await store.search("missing", axis(0), missing_ok=False)
    with pytest.raises(NotFoundError):
        await store.count("missing")
    assert await store.delete("missing", ids=["x"]) == 0
    assert await store.has_collection("missing") is False
    # Reading never creates it.
    assert await store.list_collections() == []


async def test_collection_dropped_by_another_client_is_made_again(settings: Settings) -> None:
    async with MilvusClient(settings) as first, MilvusClient(settings) as second:
        await first.upsert("kb", [chunk("one")])
        assert await second.count("kb") == 1
        assert await first.drop_collection("kb") is True
        assert await second.search("kb", axis(0)) == []
        with pytest.raises(NotFoundError):
            await second.count("kb")
        await second.upsert("kb", [chunk("two")])
        assert await first.count("kb") == 1


async def test_malformed_filter_is_invalid_and_the_client_keeps_working(
    store: MilvusClient,
) -> None:
    await store.upsert("kb", [chunk("one")])
    for expression in ['doc_id == "unterminated', 'doc_id = "a"', "no_such_field == 1", "((("]:
        with pytest.raises(InvalidRequestError, match="invalid filter expression") as caught:
            await store.search("kb", axis(0), filter=expression)
        assert expression in caught.value.message
    with pytest.raises(InvalidRequestError, match="invalid filter expression"):
        await store.delete("kb", filter="doc_id ==")

    assert [s.text for s in await store.search("kb", axis(0))] == ["one"]
    assert await store.count("kb") == 1


async def test_failed_calls_are_raised_not_printed(
    store: MilvusClient, capfd: pytest.CaptureFixture[str]
) -> None:
    await store.upsert("kb", [chunk("one")])
    capfd.readouterr()
    with pytest.raises(InvalidRequestError):
        await store.search("kb", axis(0), filter="((")
    assert "Traceback" not in capfd.readouterr().err


async def test_shared_fixture_is_a_384_dimension_lite_store(milvus_client: MilvusClient) -> None:
    assert milvus_client.is_lite
    assert milvus_client.dim == 384
    vector = [0.0] * 384
    vector[7] = 1.0
    [record_id_] = await milvus_client.upsert(
        "default", [KnowledgeRecord(text="t", vector=vector, doc_id="d")]
    )
    [hit] = await milvus_client.search("default", vector)
    assert hit.id == record_id_
    assert hit.score == pytest.approx(1.0, abs=1e-5)


async def test_wrong_dimension_is_a_clear_error(settings: Settings) -> None:
    async with MilvusClient(settings) as store:
        await store.upsert("kb", [chunk("one")])
        short = KnowledgeRecord(text="short", vector=[1.0, 0.0, 0.0], doc_id="d")
        with pytest.raises(InvalidRequestError, match="8-dimensional vectors, got one of 3"):
            await store.upsert("kb", [chunk("fine", index=1), short])
        with pytest.raises(InvalidRequestError, match="8-dimensional vectors, got one of 3"):
            await store.search("kb", [1.0, 0.0, 0.0])
        with pytest.raises(InvalidRequestError, match="zeros"):
            await store.search("kb", [0.0] * DIM)
        assert await store.count("kb") == 1  # nothing of the refused batch was stored

    # A client configured for another dimension still reads the collection's own.
    async with MilvusClient(settings.model_copy(update={"embedding_dim": 4})) as other:
        with pytest.raises(InvalidRequestError, match="8-dimensional"):
            await other.search("kb", [1.0, 0.0, 0.0, 0.0])
        await other.upsert("small", [KnowledgeRecord(text="t", vector=[1, 0, 0, 0], doc_id="d")])
        assert [s.text for s in await other.search("small", [1.0, 0.0, 0.0, 0.0])] == ["t"]


async def test_bad_arguments(store: MilvusClient) -> None:
    for name in ["", "1abc", "has-dash", "a" * 256, "spaces here"]:
        with pytest.raises(InvalidRequestError, match="invalid collection name"):
            await store.search(name, axis(0))
    for top_k in (0, 16_385):
        with pytest.raises(InvalidRequestError, match="top_k"):
            await store.search("kb", axis(0), top_k=top_k)


async def test_big_and_concurrent_upserts(store: MilvusClient) -> None:
    many = [chunk(f"text {i}", "big", i, along=i % DIM) for i in range(UPSERT_BATCH_SIZE + 44)]
    ids = await store.upsert("kb", many)
    assert len(set(ids)) == len(many)
    assert await store.count("kb") == len(many)

    # Calls on one Milvus Lite database are serialized: concurrent writes all land.
    await asyncio.gather(*(store.upsert("kb", [chunk(f"c{i}", "conc", i)]) for i in range(8)))
    assert await store.count("kb") == len(many) + 8


async def test_data_folder_is_created(tmp_path: Path) -> None:
    settings = lite_settings(tmp_path / "not" / "yet" / "there", embedding_dim=DIM)
    async with MilvusClient(settings) as store:
        await store.connect()
        assert store.is_lite
        assert Path(store.target).parent.is_dir()


_OPEN_IN_ANOTHER_PROCESS = textwrap.dedent(
    """
    import asyncio, sys
    from handler_base.clients.milvus import MilvusClient
    from handler_base.errors import UnavailableError
    from handler_base.testing.milvus_fixtures import lite_settings

    async def main() -> None:
        for _ in sys.stdin:  # one attempt per line
            client = MilvusClient(lite_settings(sys.argv[1], embedding_dim=8))
            try:
                print("count", await client.count("kb"), flush=True)
            except UnavailableError as exc:
                print("unavailable", exc.message, flush=True)
            finally:
                client.close()

    asyncio.run(main())
    """
)


async def test_one_process_per_database(settings: Settings) -> None:
    client = MilvusClient(settings)
    await client.upsert("kb", [chunk("one")])
    other = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _OPEN_IN_ANOTHER_PROCESS,
        str(settings.data_dir),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert other.stdin is not None
    assert other.stdout is not None

    async def attempt() -> str:
        assert other.stdin is not None
        assert other.stdout is not None
        other.stdin.write(b"open\n")
        await other.stdin.drain()
        line = await asyncio.wait_for(other.stdout.readline(), timeout=120)
        return line.decode().strip()

    try:
        held = await attempt()
        assert held.startswith("unavailable"), held
        assert "another process" in held

        client.close()  # stops the embedded server and frees the database
        assert await attempt() == "count 1"
    finally:
        client.close()
        other.stdin.close()
        assert await asyncio.wait_for(other.wait(), timeout=60) == 0


# --- A Milvus server (MILVUS_URI=http://...) -------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_server_by_uri(milvus_server_uri: str) -> None:
    settings = Settings(milvus_uri=milvus_server_uri, embedding_dim=DIM)
    async with MilvusClient(settings) as store:
        assert not store.is_lite
        await store.upsert("kb", [chunk("one"), chunk("two", index=1, along=1)])
        assert [s.text for s in await store.search("kb", axis(1), top_k=1)] == ["two"]
        assert await store.list_collections() == [CollectionInfo(name="kb", count=2)]


async def test_unreachable_server_is_unavailable() -> None:
    port = _free_port()
    for settings in (
        Settings(milvus_uri=f"http://127.0.0.1:{port}", embedding_dim=DIM),
        Settings(milvus_host="127.0.0.1", milvus_port=port, embedding_dim=DIM),
    ):
        store = MilvusClient(settings, timeout_s=2)  # building it does no I/O
        with pytest.raises(UnavailableError, match=f"127.0.0.1:{port}"):
            await store.search("kb", axis(0))
        with pytest.raises(UnavailableError):
            await store.connect()
        store.close()


async def test_server_that_goes_away_is_unavailable(tmp_path: Path) -> None:
    from handler_base.testing.milvus_fixtures import milvus_protocol_server

    with milvus_protocol_server(tmp_path / "server") as uri:
        store = MilvusClient(Settings(milvus_uri=uri, embedding_dim=DIM), timeout_s=2)
        await store.upsert("kb", [chunk("one")])
    try:
        with pytest.raises(UnavailableError):
            await store.count("kb")
    finally:
        store.close()
