"""MilvusStore against real Milvus Lite (and Milvus Lite's gRPC server as a "server").

What every store does is tested in ``test_store_contract.py``, over Milvus too; this file
holds what only Milvus has: filter strings, Lite's one-process rule, a server, reopening.
Nothing is mocked. Vectors are hand-made and 8-dimensional to keep the tests fast.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chat_handler.stores import CollectionInfo, KnowledgeRecord, MilvusStore, quote_string
from chat_handler.stores.milvus import UPSERT_BATCH_SIZE
from chat_handler.testing import SMALL_DIM, axis, lite_settings
from chat_handler.testing import chunk_record as chunk
from handler_base.errors import InvalidRequestError, NotFoundError, UnavailableError
from handler_base.settings import Settings

DIM = SMALL_DIM
pytestmark = pytest.mark.integration


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return lite_settings(tmp_path / "data", embedding_dim=DIM)


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[MilvusStore]:
    client = MilvusStore(settings)
    yield client
    client.close()


def test_settings_that_name_no_database_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.db"):
        MilvusStore(Settings(milvus_uri=str(tmp_path / "milvus")))


# --- Milvus Lite ---------------------------------------------------------------------------


async def test_filters_keep_other_documents_out(store: MilvusStore) -> None:
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


async def test_data_outlives_the_client(settings: Settings) -> None:
    client = MilvusStore(settings)
    ids = await client.upsert("kb", [chunk("kept", along=2), chunk("gone", index=1)])
    await client.delete("kb", ids=[ids[1]])
    await client.set_vocabulary("kb", ["Kelvington Island"])
    client.close()
    client.close()  # closing twice is harmless
    with pytest.raises(UnavailableError, match="closed"):
        await client.count("kb")

    async with MilvusStore(settings) as reopened:
        assert await reopened.count("kb") == 1
        [hit] = await reopened.search("kb", axis(2))
        assert (hit.id, hit.text) == (ids[0], "kept")
        assert await reopened.collections() == [CollectionInfo(name="kb", count=1)]
        assert await reopened.vocabulary("kb") == ["Kelvington Island"]


async def test_missing_collection_on_demand_and_made_empty(store: MilvusStore) -> None:
    with pytest.raises(NotFoundError, match="'missing' does not exist"):
        await store.search("missing", axis(0), missing_ok=False)
    assert await store.has_collection("missing") is False
    await store.ensure_collection("empty")
    assert await store.collections() == [CollectionInfo(name="empty", count=0)]


async def test_collection_dropped_by_another_client_is_made_again(settings: Settings) -> None:
    async with MilvusStore(settings) as first, MilvusStore(settings) as second:
        await first.upsert("kb", [chunk("one")])
        assert await second.count("kb") == 1
        assert await first.drop_collection("kb") is True
        assert await second.search("kb", axis(0)) == []
        with pytest.raises(NotFoundError):
            await second.count("kb")
        await second.upsert("kb", [chunk("two")])
        assert await first.count("kb") == 1


async def test_malformed_filter_is_invalid_and_the_client_keeps_working(
    store: MilvusStore,
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
    store: MilvusStore, capfd: pytest.CaptureFixture[str]
) -> None:
    await store.upsert("kb", [chunk("one")])
    capfd.readouterr()
    with pytest.raises(InvalidRequestError):
        await store.search("kb", axis(0), filter="((")
    assert "Traceback" not in capfd.readouterr().err


async def test_shared_fixture_is_a_384_dimension_lite_store(milvus_store: MilvusStore) -> None:
    assert milvus_store.is_lite
    assert milvus_store.dim == 384
    vector = [0.0] * 384
    vector[7] = 1.0
    [record_id_] = await milvus_store.upsert(
        "default", [KnowledgeRecord(text="t", vector=vector, doc_id="d")]
    )
    [hit] = await milvus_store.search("default", vector)
    assert hit.id == record_id_
    assert hit.score == pytest.approx(1.0, abs=1e-5)


async def test_a_collection_keeps_its_own_dimension(settings: Settings) -> None:
    async with MilvusStore(settings) as store:
        await store.upsert("kb", [chunk("one")])

    # A client configured for another dimension still reads the collection's own.
    async with MilvusStore(settings.model_copy(update={"embedding_dim": 4})) as other:
        with pytest.raises(InvalidRequestError, match="8-dimensional"):
            await other.search("kb", [1.0, 0.0, 0.0, 0.0])
        await other.upsert("small", [KnowledgeRecord(text="t", vector=[1, 0, 0, 0], doc_id="d")])
        assert [s.text for s in await other.search("small", [1.0, 0.0, 0.0, 0.0])] == ["t"]


async def test_big_and_concurrent_upserts(store: MilvusStore) -> None:
    many = [chunk(f"text {i}", "big", i, along=i % DIM) for i in range(UPSERT_BATCH_SIZE + 44)]
    ids = await store.upsert("kb", many)
    assert len(set(ids)) == len(many)
    assert await store.count("kb") == len(many)

    # Calls on one Milvus Lite database are serialized: concurrent writes all land.
    await asyncio.gather(*(store.upsert("kb", [chunk(f"c{i}", "conc", i)]) for i in range(8)))
    assert await store.count("kb") == len(many) + 8


async def test_data_folder_is_created(tmp_path: Path) -> None:
    settings = lite_settings(tmp_path / "not" / "yet" / "there", embedding_dim=DIM)
    async with MilvusStore(settings) as store:
        await store.connect()
        assert store.is_lite
        assert Path(store.target).parent.is_dir()


_OPEN_IN_ANOTHER_PROCESS = textwrap.dedent(
    """
    import asyncio, sys
    from chat_handler.stores import MilvusStore
    from handler_base.errors import UnavailableError
    from chat_handler.testing import lite_settings

    async def main() -> None:
        for _ in sys.stdin:  # one attempt per line
            client = MilvusStore(lite_settings(sys.argv[1], embedding_dim=8))
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
    client = MilvusStore(settings)
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
    async with MilvusStore(settings) as store:
        assert not store.is_lite
        await store.upsert("kb", [chunk("one"), chunk("two", index=1, along=1)])
        assert [s.text for s in await store.search("kb", axis(1), top_k=1)] == ["two"]
        assert await store.collections() == [CollectionInfo(name="kb", count=2)]
        # The vocabulary is a collection property, which the server keeps too.
        assert await store.set_vocabulary("kb", ["Kelvington Island", "pier"]) is True
        assert await store.vocabulary("kb") == ["Kelvington Island", "pier"]
        assert sorted(await store.texts("kb")) == ["one", "two"]


async def test_unreachable_server_is_unavailable() -> None:
    port = _free_port()
    for settings in (
        Settings(milvus_uri=f"http://127.0.0.1:{port}", embedding_dim=DIM),
        Settings(milvus_host="127.0.0.1", milvus_port=port, embedding_dim=DIM),
    ):
        store = MilvusStore(settings, timeout_s=2)  # building it does no I/O
        with pytest.raises(UnavailableError, match=f"127.0.0.1:{port}"):
            await store.search("kb", axis(0))
        with pytest.raises(UnavailableError):
            await store.connect()
        store.close()


async def test_server_that_goes_away_is_unavailable(tmp_path: Path) -> None:
    from chat_handler.testing import milvus_protocol_server

    with milvus_protocol_server(tmp_path / "server") as uri:
        store = MilvusStore(Settings(milvus_uri=uri, embedding_dim=DIM), timeout_s=2)
        await store.upsert("kb", [chunk("one")])
    try:
        with pytest.raises(UnavailableError):
            await store.count("kb")
    finally:
        store.close()
