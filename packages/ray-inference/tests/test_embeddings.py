"""The embeddings deployment on a real local Ray cluster with the packaged MiniLM model."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
from openai import AsyncOpenAI

from handler_base.clients.embeddings import EmbeddingsClient
from handler_base.errors import InvalidRequestError, TooLargeError
from handler_base.inference import (
    MAX_EMBEDDING_INPUT_CHARS,
    MAX_EMBEDDING_INPUTS,
    EmbeddingsRequest,
)
from handler_base.testing.platform import SharedApps
from ray_inference.text_encoder import TextEncoder

pytestmark = pytest.mark.integration

QUERY = "How do I reset my password?"
RELATED = "To change a forgotten password, click 'Forgot password' on the login page."
UNRELATED = "The Eiffel Tower is in Paris."


@pytest.fixture(scope="module")
def embeddings_app(model_apps: SharedApps) -> str:
    return model_apps.url("embeddings")


@pytest.fixture
async def clients(embeddings_app: str) -> AsyncIterator[tuple[EmbeddingsClient, EmbeddingsClient]]:
    async with (
        EmbeddingsClient(mode="handle") as by_handle,
        EmbeddingsClient(mode="http", base_url=embeddings_app) as by_http,
    ):
        yield by_handle, by_http


@pytest.fixture(scope="module")
def local_encoder() -> TextEncoder:
    return TextEncoder.from_sources()


async def test_a_related_pair_scores_above_an_unrelated_one(
    clients: tuple[EmbeddingsClient, EmbeddingsClient],
) -> None:
    by_handle, _ = clients

    query, related, unrelated = np.array(await by_handle.embed([QUERY, RELATED, UNRELATED]))

    assert query.shape == (384,)
    assert float(query @ related) > float(query @ unrelated) + 0.2


async def test_handle_and_http_give_the_same_vectors_as_the_model(
    clients: tuple[EmbeddingsClient, EmbeddingsClient], local_encoder: TextEncoder
) -> None:
    by_handle, by_http = clients
    texts = [QUERY, RELATED, UNRELATED, "x"]

    from_handle = await by_handle.create_embeddings(EmbeddingsRequest(input=texts))
    from_http = await by_http.create_embeddings(EmbeddingsRequest(input=texts))

    # The JSON content; model_time_ms is measured per call and compared below.
    assert from_handle.model_dump() == from_http.model_dump()
    assert from_handle.model_time_ms is not None
    assert from_handle.model_time_ms > 0
    assert from_http.model_time_ms is not None
    assert from_http.model_time_ms > 0
    expected = local_encoder.encode(texts)
    np.testing.assert_allclose(np.array(from_handle.vectors), expected.vectors, atol=1e-5)
    tokens = sum(expected.token_counts)
    assert from_handle.usage.prompt_tokens == from_handle.usage.total_tokens == tokens
    assert from_handle.model == "all-MiniLM-L6-v2"
    assert [e.index for e in from_handle.data] == [0, 1, 2, 3]


async def test_the_openai_client_works_unchanged(
    embeddings_app: str, local_encoder: TextEncoder
) -> None:
    openai = AsyncOpenAI(base_url=f"{embeddings_app}/v1", api_key="unused", max_retries=0)
    try:
        default = await openai.embeddings.create(model="all-MiniLM-L6-v2", input=[QUERY, RELATED])
        floats = await openai.embeddings.create(
            model="all-MiniLM-L6-v2", input=QUERY, encoding_format="float"
        )
    finally:
        await openai.close()

    expected = local_encoder.encode([QUERY, RELATED])
    # The client asks for base64 unless told otherwise and decodes it itself.
    np.testing.assert_allclose([d.embedding for d in default.data], expected.vectors, atol=1e-5)
    np.testing.assert_allclose(floats.data[0].embedding, expected.vectors[0], atol=1e-5)
    assert default.usage.prompt_tokens == sum(expected.token_counts)
    assert default.model == "all-MiniLM-L6-v2"


async def test_concurrent_requests_are_batched_and_each_gets_its_own_vectors(
    clients: tuple[EmbeddingsClient, EmbeddingsClient], local_encoder: TextEncoder
) -> None:
    texts = [f"sentence number {i} about topic {i % 7}" for i in range(48)]

    results = await asyncio.gather(*(clients[i % 2].embed_one(t) for i, t in enumerate(texts)))

    np.testing.assert_allclose(np.array(results), local_encoder.encode(texts).vectors, atol=1e-5)


async def test_concurrent_one_text_calls_share_model_runs(
    clients: tuple[EmbeddingsClient, EmbeddingsClient], embeddings_app: str
) -> None:
    """Fails with batching off: every run would then hold one text."""
    from ray import serve

    stats = serve.get_deployment_handle("EmbeddingsDeployment", app_name="embeddings").stats
    before = await stats.remote()

    await asyncio.gather(*(clients[0].embed_one(f"one text {i}") for i in range(32)))

    after = await stats.remote()
    new_runs = after["batches"] - before["batches"]
    assert after["texts"] - before["texts"] == 32
    assert 1 <= new_runs < 32
    assert max(after["recent"][-new_runs:]) > 1
    async with httpx.AsyncClient(base_url=embeddings_app, timeout=60) as http:
        over_http = (await http.get("/stats")).json()
    assert over_http["texts"] >= after["texts"]
    assert over_http["max_batch_size"] == after["max_batch_size"] > 1


async def test_more_texts_than_one_request_takes_are_sent_in_several(
    clients: tuple[EmbeddingsClient, EmbeddingsClient],
) -> None:
    by_handle, _ = clients
    texts = [f"text {i}" for i in range(MAX_EMBEDDING_INPUTS + 10)]

    vectors = await by_handle.embed(texts)

    assert len(vectors) == len(texts)
    assert await by_handle.embed([]) == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"input": []}, 400, "invalid_request"),
        ({"input": ""}, 400, "invalid_request"),
        ({"input": ["ok", ""]}, 400, "invalid_request"),
        ({"input": 42}, 400, "invalid_request"),
        ({"input": ["a"], "encoding_format": "int8"}, 400, "invalid_request"),
        ({}, 400, "invalid_request"),
        ({"input": ["a"] * (MAX_EMBEDDING_INPUTS + 1)}, 413, "too_large"),
        ({"input": "a" * (MAX_EMBEDDING_INPUT_CHARS + 1)}, 413, "too_large"),
    ],
)
async def test_bad_requests_get_the_error_shape_and_the_service_keeps_serving(
    embeddings_app: str, body: dict[str, Any], status: int, code: str
) -> None:
    async with httpx.AsyncClient(base_url=embeddings_app, timeout=60) as http:
        bad = await http.post("/v1/embeddings", json=body)
        good = await http.post("/v1/embeddings", json={"input": QUERY})

    assert bad.status_code == status
    assert bad.json()["error"]["code"] == code
    assert good.status_code == 200
    assert len(good.json()["data"][0]["embedding"]) == 384


async def test_malformed_json_is_an_invalid_request(embeddings_app: str) -> None:
    async with httpx.AsyncClient(base_url=embeddings_app, timeout=60) as http:
        response = await http.post(
            "/v1/embeddings", content=b'{"input": [', headers={"Content-Type": "application/json"}
        )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


async def test_bad_handle_calls_raise_typed_errors(
    clients: tuple[EmbeddingsClient, EmbeddingsClient],
) -> None:
    by_handle, _ = clients

    with pytest.raises(InvalidRequestError):
        await by_handle.embed(["fine", ""])
    with pytest.raises(TooLargeError):
        await by_handle.embed(["a" * (MAX_EMBEDDING_INPUT_CHARS + 1)])
    with pytest.raises(InvalidRequestError):
        # A plain mapping reaches the deployment, which validates it.
        await by_handle._call("embed", {"input": []}, "/v1/embeddings")
    assert len(await by_handle.embed_one(QUERY)) == 384
