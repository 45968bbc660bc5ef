"""``KnowledgeClient`` against the real chat app, through its handle and over HTTP.

The chat app runs beside the session's model apps (``model_apps``); the knowledge
operations use only the embeddings app.
"""

from collections.abc import Iterator

import pytest

from chat_handler.deployment import build_app
from handler_base.clients import KnowledgeClient
from handler_base.clients.base import ClientMode
from handler_base.errors import InvalidRequestError, NotFoundError
from handler_base.settings import Settings
from handler_base.testing.platform import SharedApps

pytestmark = pytest.mark.integration

PATH_ID = "/manuals/kettle.md"
"""An id with slashes, as documents loaded from files have."""


@pytest.fixture(scope="module")
def chat_url(model_apps: SharedApps, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from ray import serve

    milvus_uri = str(tmp_path_factory.mktemp("knowledge-milvus") / "milvus.db")
    serve.run(build_app({"milvus_uri": milvus_uri}), name="chat", route_prefix="/chat")
    try:
        yield f"{model_apps.http_url}/chat"
    finally:
        serve.delete("chat")


@pytest.mark.parametrize("mode", ["handle", "http"])
async def test_ingest_search_delete_and_collections(chat_url: str, mode: ClientMode) -> None:
    collection = f"kettles_{mode}"
    async with KnowledgeClient(Settings(chat_url=chat_url), mode=mode) as client:
        assert await client.path() == mode
        stored = await client.ingest(
            {
                "collection": collection,
                "documents": [
                    {
                        "id": PATH_ID,
                        "text": "The Vellum kettle whistles in B flat. It holds 1.7 litres.",
                        "metadata": {"title": "Kettle manual"},
                    },
                    {"text": "Our shop sells umbrellas in seven colours."},
                ],
            }
        )
        assert stored.collection == collection
        assert stored.ids[0] == PATH_ID
        assert len(stored.ids[1]) == 32  # a hash of the text
        assert stored.chunks == 2

        found = await client.search(
            {"query": "Which note does the kettle whistle?", "collection": collection, "top_k": 2}
        )
        assert found.results[0].metadata["doc_id"] == PATH_ID
        assert "B flat" in found.results[0].text

        summaries = {c.name: c.count for c in (await client.collections()).collections}
        assert summaries[collection] == 2

        assert (await client.delete_document(PATH_ID, collection)).deleted == 1
        assert (await client.delete_document(PATH_ID, collection)).deleted == 0
        summaries = {c.name: c.count for c in (await client.collections()).collections}
        assert summaries[collection] == 1


async def test_bad_requests_are_refused_before_any_call(chat_url: str) -> None:
    async with KnowledgeClient(Settings(chat_url=chat_url), mode="http") as client:
        with pytest.raises(InvalidRequestError):
            await client.ingest({"documents": []})
        with pytest.raises(InvalidRequestError):
            await client.search({"query": "  "})
        with pytest.raises(InvalidRequestError):
            await client.delete_document("x", "bad name")
        with pytest.raises(InvalidRequestError):
            await client.vocabulary("bad name")
        assert client._http is None  # nothing was sent


async def test_the_handle_methods_validate_what_they_are_given(chat_url: str) -> None:
    from ray import serve

    handle = serve.get_app_handle("chat")
    with pytest.raises(Exception, match="InvalidRequestError"):
        await handle.ingest.remote({"documents": "not a list"})
    answer = await handle.delete_document.remote({"id": "nothing", "collection": "empty_one"})
    assert answer.deleted == 0


@pytest.mark.parametrize("mode", ["handle", "http"])
async def test_the_vocabulary_follows_ingest_and_delete(chat_url: str, mode: ClientMode) -> None:
    collection = f"vocabulary_{mode}"
    async with KnowledgeClient(Settings(chat_url=chat_url), mode=mode) as client:
        await client.ingest(
            {
                "collection": collection,
                "documents": [
                    {"id": PATH_ID, "text": "The Vellum kettle whistles on the Ostrander hob."},
                    {"id": "ferry", "text": "Ferries to Kelvington Island leave the slipway."},
                ],
            }
        )
        answer = await client.vocabulary(collection)
        assert answer.collection == collection
        assert {"Vellum", "Ostrander", "Kelvington Island", "slipway"} <= set(answer.terms)

        await client.delete_document(PATH_ID, collection)
        terms = (await client.vocabulary(collection)).terms
        assert "Vellum" not in terms
        assert "Kelvington Island" in terms

        with pytest.raises(NotFoundError):
            await client.vocabulary("nothing_here")
