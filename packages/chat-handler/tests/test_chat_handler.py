"""The chat app with the real models on the session's Ray cluster, over HTTP and handles.

The chat app runs beside the session's model apps (``model_apps``); its knowledge base
is a Milvus Lite database in a temporary folder.
"""

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from chat_handler.deployment import build_app
from chat_handler.rag import NO_SOURCES_ANSWER, RERANKED_KEY
from handler_base.messages import ChatRequest, ChatResponse
from handler_base.testing.platform import SharedApps

pytestmark = pytest.mark.integration

COLLECTION = "products"
FACT = "The ZX-41 flux capacitor ships in teal and costs 417 euros."
QUESTION = "How much does the ZX-41 flux capacitor cost?"
DOCUMENTS = [
    {
        "id": "zx41",
        "text": FACT + " Dr. Okafor designed its housing.",
        "metadata": {"title": "ZX-41 flux capacitor"},
    },
    {
        "id": "qp7",
        "text": "The QP-7 router blinks amber while its firmware updates. It weighs 2.3 kg.",
    },
    {"id": "hours", "text": "The support desk opens at 9 in the morning and closes at 5."},
]


@pytest.fixture(scope="module")
def chat_url(model_apps: SharedApps, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from ray import serve

    milvus_uri = str(tmp_path_factory.mktemp("chat-milvus") / "milvus.db")
    serve.run(build_app({"milvus_uri": milvus_uri}), name="chat", route_prefix="/chat")
    try:
        yield f"{model_apps.http_url}/chat"
    finally:
        serve.delete("chat")


@pytest.fixture(scope="module")
def http(chat_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=chat_url, timeout=120) as client:
        response = client.post(
            "/knowledge/documents", json={"collection": COLLECTION, "documents": DOCUMENTS}
        )
        assert response.status_code == 200, response.text
        yield client


def count(http: httpx.Client, collection: str = COLLECTION) -> int:
    response = http.get("/knowledge/collections")
    assert response.status_code == 200, response.text
    found = {c["name"]: c["count"] for c in response.json()["collections"]}
    return int(found.get(collection, 0))


def sse_events(text: str) -> list[tuple[str, Any]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines.get("event", ""), json.loads(lines["data"])))
    return events


def assert_error(response: httpx.Response, code: str) -> None:
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["code"] == code, response.text


def test_ingested_fact_is_answered_and_cited(http: httpx.Client) -> None:
    response = http.post(
        "", json={"query": QUESTION, "collection": COLLECTION, "top_n": 2, "request_id": "q-1"}
    )
    assert response.status_code == 200, response.text
    answer = ChatResponse.model_validate(response.json())
    assert answer.request_id == "q-1"
    assert "417" in answer.response
    assert answer.sources[0].metadata["doc_id"] == "zx41"
    assert FACT in answer.sources[0].text


def test_ingesting_again_changes_no_count(http: httpx.Client) -> None:
    before = count(http)
    assert before >= 3
    response = http.post(
        "/knowledge/documents", json={"collection": COLLECTION, "documents": DOCUMENTS}
    )
    assert response.status_code == 200, response.text
    assert response.json()["ids"] == ["zx41", "qp7", "hours"]
    assert count(http) == before


def test_a_document_without_id_gets_a_content_hash(http: httpx.Client) -> None:
    body = {"collection": "scratch", "documents": [{"text": "The KL-9 kettle hums."}]}
    first = http.post("/knowledge/documents", json=body).json()
    second = http.post("/knowledge/documents", json=body).json()
    assert first["ids"] == second["ids"]
    assert first["chunks"] == 1
    assert count(http, "scratch") == 1


def test_search_and_filter(http: httpx.Client) -> None:
    response = http.post(
        "/knowledge/search", json={"query": "router firmware", "collection": COLLECTION}
    )
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["metadata"]["doc_id"] == "qp7"
    for filter in ['doc_id == "hours"', {"field": "doc_id", "value": "hours"}]:
        response = http.post(
            "/knowledge/search",
            json={"query": QUESTION, "collection": COLLECTION, "filter": filter},
        )
        assert response.status_code == 200, response.text
        assert {r["metadata"]["doc_id"] for r in response.json()["results"]} == {"hours"}
    structured = {"and": [{"field": "metadata.title", "op": "ne", "value": "x"}]}
    answer = http.post("", json={"query": QUESTION, "collection": COLLECTION, "filter": structured})
    assert answer.status_code == 200, answer.text
    assert {s["metadata"]["doc_id"] for s in answer.json()["sources"]} == {"zx41"}


def test_search_with_rerank_answers_in_the_pipelines_order(http: httpx.Client) -> None:
    body = {"query": QUESTION, "collection": COLLECTION, "top_k": 3}
    plain = http.post("/knowledge/search", json=body).json()["results"]
    response = http.post("/knowledge/search", json={**body, "rerank": True})
    assert response.status_code == 200, response.text
    reranked = response.json()["results"]
    # the same passages, all kept, ordered and scored by the reranker
    assert sorted(s["id"] for s in reranked) == sorted(s["id"] for s in plain)
    assert reranked[0]["metadata"]["doc_id"] == "zx41"
    assert all(s["metadata"][RERANKED_KEY] is True for s in reranked)
    assert all(RERANKED_KEY not in s["metadata"] for s in plain)
    searched = {s["id"]: s["score"] for s in plain}
    assert {s["id"]: s["metadata"]["search_score"] for s in reranked} == pytest.approx(searched)


def test_a_deleted_document_is_no_longer_a_source(http: httpx.Client) -> None:
    http.post(
        "/knowledge/documents",
        json={"collection": "gone", "documents": [{"id": "zx41", "text": FACT}, DOCUMENTS[1]]},
    )
    response = http.delete("/knowledge/documents/zx41", params={"collection": "gone"})
    assert response.status_code == 200, response.text
    assert response.json()["deleted"] >= 1
    answer = http.post("", json={"query": QUESTION, "collection": "gone"}).json()
    assert all(s["metadata"]["doc_id"] != "zx41" for s in answer["sources"])


def test_post_chat_without_a_trailing_slash_is_answered(chat_url: str, http: httpx.Client) -> None:
    # `POST /chat` exactly as the contract writes it: no redirect to `/chat/`.
    response = httpx.post(chat_url, json={"query": QUESTION, "collection": "empty"}, timeout=120)
    assert response.status_code == 200, response.text
    assert response.json()["sources"] == []


def test_the_stream_ends_with_the_same_text_and_sources(http: httpx.Client) -> None:
    body = {"query": QUESTION, "collection": COLLECTION, "top_n": 2}
    whole = http.post("", json=body).json()
    response = http.post("", json={**body, "stream": True})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    *pieces, (last_event, last) = sse_events(response.text)
    assert pieces
    assert all(event == "text" for event, _ in pieces)
    assert last_event == "done"
    assert last["response"] == "".join(data["text"] for _, data in pieces)
    assert last["response"] == whole["response"]
    assert [s["id"] for s in last["sources"]] == [s["id"] for s in whole["sources"]]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"query": ""}, "invalid_request"),
        ({"query": "x" * 9000}, "too_large"),
        ({"query": 42}, "invalid_request"),
        ({"query": "hi", "top_k": "many"}, "invalid_request"),
        ({"query": "hi", "top_k": 2, "top_n": 3}, "invalid_request"),
        (
            {"query": QUESTION, "collection": COLLECTION, "filter": "doc_id === ("},
            "invalid_request",
        ),
        ({"query": "hi", "collection": "not a name"}, "invalid_request"),
        ({"query": "hi", "filter": {"field": "title", "value": "x"}}, "invalid_request"),
        (
            {"query": "hi", "filter": {"field": "doc_id", "op": "gt", "value": "a"}},
            "invalid_request",
        ),
    ],
)
def test_bad_input_gets_the_error_shape_and_the_next_request_is_answered(
    http: httpx.Client, body: dict[str, Any], code: str
) -> None:
    assert_error(http.post("", json=body), code)
    response = http.post("/knowledge/search", json={"query": QUESTION, "collection": COLLECTION})
    assert response.status_code == 200, response.text


def test_an_unknown_collection_answers_that_it_found_no_sources(http: httpx.Client) -> None:
    response = http.post("", json={"query": QUESTION, "collection": "nothing_here"})
    assert response.status_code == 200, response.text
    assert response.json()["response"] == NO_SOURCES_ANSWER
    assert response.json()["sources"] == []
    assert http.delete("/knowledge/documents/x", params={"collection": "nothing_here"}).json() == {
        "deleted": 0
    }


def test_malformed_json_and_bad_knowledge_bodies(http: httpx.Client) -> None:
    bad = http.post("", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(bad, "invalid_request")
    assert_error(http.post("/knowledge/documents", json={"documents": []}), "invalid_request")
    assert_error(http.post("/knowledge/search", json={"query": " "}), "invalid_request")
    assert_error(
        http.delete("/knowledge/documents/x", params={"collection": "bad name"}), "invalid_request"
    )
    # Still serving, through the embeddings model and the store.
    response = http.post("/knowledge/search", json={"query": QUESTION, "collection": COLLECTION})
    assert response.status_code == 200, response.text
    assert response.json()["results"]


def test_metadata_the_store_cannot_keep_is_a_bad_request(http: httpx.Client) -> None:
    # Found by tests/test_openapi_fuzz.py: an integer past 64 bits made the Milvus upsert
    # fail with a 500 after the chunks were embedded.
    def ingest(serial: int) -> httpx.Response:
        document = {"text": "The KL-9 kettle hums.", "metadata": {"serial": serial}}
        body = {"collection": "odd", "documents": [document]}
        return http.post("/knowledge/documents", json=body)

    response = ingest(2**64)
    assert_error(response, "invalid_request")
    assert "64-bit" in response.json()["error"]["message"]
    response = ingest(2**63 - 1)
    assert response.status_code == 200, response.text


async def test_handle_methods(http: httpx.Client) -> None:
    from ray import serve

    handle = serve.get_app_handle("chat")
    request = ChatRequest(query=QUESTION, collection=COLLECTION, top_n=2)
    whole = await handle.chat.remote(request)
    assert isinstance(whole, ChatResponse)
    from ray.serve.handle import DeploymentResponseGenerator

    stream = handle.options(stream=True).chat_stream.remote(request)
    assert isinstance(stream, DeploymentResponseGenerator)
    items = [item async for item in stream]
    assert isinstance(items[-1], ChatResponse)
    assert items[-1].response == whole.response


def test_the_openai_client_works(http: httpx.Client, chat_url: str) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{chat_url}/v1", api_key="unused", max_retries=0)
    messages: Any = [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": QUESTION},
    ]
    completion = client.chat.completions.create(
        model="rag", messages=messages, extra_body={"collection": COLLECTION, "top_n": 2}
    )
    assert "417" in (completion.choices[0].message.content or "")
    sources = (completion.model_extra or {})["sources"]
    assert sources[0]["metadata"]["doc_id"] == "zx41"
    stream = client.chat.completions.create(
        model="rag",
        messages=messages,
        stream=True,
        extra_body={"collection": COLLECTION, "top_n": 2},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == completion.choices[0].message.content
    assert (chunks[-1].model_extra or {})["sources"] == sources
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="rag", messages=messages, extra_body={"top_k": 2, "top_n": 3}
        )


def test_the_reranker_stopped_still_gives_an_answer(
    http: httpx.Client, model_apps: SharedApps
) -> None:
    with model_apps.stopped("reranker"):
        response = http.post("", json={"query": QUESTION, "collection": COLLECTION, "top_n": 2})
    assert response.status_code == 200, response.text
    sources = response.json()["sources"]
    assert sources
    assert all(s["metadata"][RERANKED_KEY] is False for s in sources)
