"""The reranker: BM25, the hybrid default, a tiny cross-encoder built here, the deployment.

No cross-encoder ships offline, so :func:`build_tiny_cross_encoder` writes one: an ONNX
graph (embedding lookup of token and type ids, mean over the attention mask, dot product
with fixed vectors) and a WordLevel ``tokenizer.json``. Its scores are computed again by
hand in numpy, which proves the loading, pair encoding and scoring code.
"""

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper
from pydantic import ValidationError
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from handler_base.clients.reranker import RerankerClient
from handler_base.errors import InvalidRequestError, TooLargeError
from handler_base.inference import MAX_RERANK_DOCUMENTS, RerankRequest
from handler_base.testing.platform import SharedApps
from handler_base.testing.ray_fixtures import LocalServe
from ray_inference.model_sources import ModelSourceError
from ray_inference.reranker import (
    BM25,
    DEFAULT_DENSE_WEIGHT,
    CrossEncoderScorer,
    HybridScorer,
    RerankerArgs,
    build_app,
    lexical_terms,
    make_scorer,
    ranked,
)

QUERY = "How does the reranker score passages?"
PASSAGES = [
    "Milvus stores the vectors of the knowledge base on disk.",
    "The reranker scores each passage against the query and returns them best first.",
    "Paris is the capital of France.",
    "Passages are chunks of the ingested documents.",
]
RELEVANT = 1

# --- the tiny cross-encoder --------------------------------------------------------------

WORDS = "what is the capital of france paris berlin a city in germany weather sunny"
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS.split()]
DIM = 8
RELEVANT_WORDS = ("capital", "france", "paris")


def tiny_weights(classes: int) -> dict[str, NDArray[np.float32]]:
    """Token and type embeddings and the head: words about Paris point along axis 0."""
    rng = np.random.default_rng(7)
    tokens = rng.normal(0.0, 0.3, (len(VOCAB), DIM)).astype(np.float32)
    for word in RELEVANT_WORDS:
        tokens[VOCAB.index(word), 0] += 2.0
    types = rng.normal(0.0, 0.3, (2, DIM)).astype(np.float32)
    head = np.zeros((DIM, classes), dtype=np.float32)
    head[0, -1] = 1.5  # the last logit is "relevant"
    head[1:, 0] = rng.normal(0.0, 0.2, DIM - 1)
    return {"tokens": tokens, "types": types, "head": head}


def build_tiny_cross_encoder(folder: Path, classes: int = 1) -> dict[str, NDArray[np.float32]]:
    """Write ``model.onnx`` and ``tokenizer.json`` of a tiny cross-encoder into ``folder``."""
    weights = tiny_weights(classes)
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
        for name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])
    initializers = [numpy_helper.from_array(value, name) for name, value in weights.items()]
    initializers.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"))
    initializers.append(numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"))
    nodes = [
        helper.make_node("Gather", ["tokens", "input_ids"], ["token_vectors"]),
        helper.make_node("Gather", ["types", "token_type_ids"], ["type_vectors"]),
        helper.make_node("Add", ["token_vectors", "type_vectors"], ["hidden"]),
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["hidden", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask3", "axis1"], ["counts"], keepdims=0),
        helper.make_node("Div", ["summed", "counts"], ["pooled"]),
        helper.make_node("MatMul", ["pooled", "head"], ["logits"]),
    ]
    graph = helper.make_graph(nodes, "tiny_cross_encoder", inputs, [output], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))

    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    tokenizer.save(str(folder / "tokenizer.json"))
    return weights


def logits_by_hand(
    weights: dict[str, NDArray[np.float32]], query: str, passage: str
) -> NDArray[np.float64]:
    """The tiny model's arithmetic for one pair, with the pair tokenized by hand."""

    def ids(text: str) -> list[int]:
        words = text.lower().replace("?", " ?").replace(".", " .").split()
        return [VOCAB.index(w) if w in VOCAB else 1 for w in words]

    token_ids = [2, *ids(query), 3, *ids(passage), 3]
    type_ids = [0] * (len(ids(query)) + 2) + [1] * (len(ids(passage)) + 1)
    hidden = weights["tokens"][token_ids] + weights["types"][type_ids]
    logits: NDArray[np.float64] = hidden.astype(np.float64).mean(axis=0) @ weights["head"]
    return logits


CE_QUERY = "What is the capital of France?"
CE_PASSAGES = [
    "Berlin is a city in Germany.",
    "Paris is the capital of France.",
    "The weather is sunny.",
    "",
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("tiny-cross-encoder")
    return folder, build_tiny_cross_encoder(folder)


@pytest.fixture(scope="module")
def hybrid() -> HybridScorer:
    scorer = make_scorer("hybrid")
    assert isinstance(scorer, HybridScorer)
    return scorer


# --- BM25 -------------------------------------------------------------------------------


def test_lexical_terms_drop_stopwords_and_plural_s() -> None:
    assert lexical_terms("How do the Deployments scale? GPUs, passages & Ray_Serve!") == [
        "deployment",
        "scale",
        "gpu",
        "passage",
        "ray",
        "serve",
    ]


def test_bm25_scores_zero_without_shared_terms_and_favours_rare_terms() -> None:
    documents = ["ray serve replicas", "ray cluster nodes", "ray ray ray", "the weather"]

    scores = BM25().scores("serve ray", documents)

    assert scores[3] == 0.0
    assert scores[0] == scores.max()  # the only one with the rare term "serve"
    assert scores[2] > scores[1]  # term frequency counts, saturating


def test_bm25_normalized_scores_are_in_unit_range_and_keep_the_order() -> None:
    documents = ["ray serve replicas", "ray cluster nodes", "ray ray ray", "the weather"]
    bm25 = BM25()

    raw = bm25.scores("serve ray", documents)
    normalized = bm25.normalized_scores("serve ray", documents)

    assert np.all((normalized >= 0.0) & (normalized <= 1.0))
    assert list(np.argsort(-raw, kind="stable")) == list(np.argsort(-normalized, kind="stable"))


def test_a_weak_lone_match_stays_low_after_normalization() -> None:
    normalized = BM25().normalized_scores(
        "configure reranker deployment method", ["a deployment", "the weather", "rain"]
    )

    assert 0.0 < normalized[0] < 0.5


def test_a_query_of_stopwords_only_scores_zero() -> None:
    assert BM25().normalized_scores("what is the", ["what is it", "the end"]).tolist() == [0, 0]


# --- the hybrid default -----------------------------------------------------------------


def test_hybrid_puts_the_passage_sharing_the_querys_words_first(hybrid: HybridScorer) -> None:
    results = ranked(hybrid.score(QUERY, PASSAGES))

    assert results[0].index == RELEVANT
    assert all(0.0 <= r.relevance_score <= 1.0 for r in results)


def test_hybrid_ranks_a_paraphrase_by_meaning_when_no_word_is_shared(
    hybrid: HybridScorer,
) -> None:
    documents = ["The stock market fell sharply.", "Felines enjoy napping in warm sunlight."]

    results = ranked(hybrid.score("cats sleeping in the sun", documents))

    assert results[0].index == 1


def test_dense_weight_zero_is_bm25_alone(hybrid: HybridScorer) -> None:
    bm25_only = HybridScorer(hybrid.encoder, dense_weight=0.0)

    np.testing.assert_allclose(
        bm25_only.score(QUERY, PASSAGES), BM25().normalized_scores(QUERY, PASSAGES)
    )


class FixedVectors:
    """An encoder stand-in: each text's vector is given (unit length)."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = {t: np.asarray(v) / np.linalg.norm(v) for t, v in vectors.items()}

    def encode(self, texts: list[str]) -> Any:
        class Embeddings:
            vectors = np.stack([self.vectors[t] for t in texts])

        return Embeddings()


def test_the_default_lets_bm25_break_near_ties_only() -> None:
    # BENCHMARKS.md, "Retrieval that never loses to dense": at the default share BM25 can
    # reorder passages whose cosines are close, not overturn a clear dense lead.
    query = "augmented assignment target"
    paraphrase, other = "in other words", "unrelated text"
    close_match, distant_match = "the augmented assignment target", "augmented assignment targets"
    encoder = FixedVectors(
        {
            query: [1.0, 0.0],
            paraphrase: [0.9, 0.436],  # cosine 0.90
            close_match: [0.85, 0.527],  # 0.85
            other: [0.85, 0.527],  # 0.85
            distant_match: [0.6, 0.8],  # 0.60
        }
    )
    scorer = HybridScorer(encoder)  # type: ignore[arg-type]
    assert scorer.dense_weight == DEFAULT_DENSE_WEIGHT == 0.9
    # 0.05 of cosine apart: the passage holding every query word goes first
    near_tie = scorer.score(query, [paraphrase, close_match])
    assert near_tie[1] > near_tie[0]
    # 0.3 apart: every query word cannot make that up
    clear_lead = scorer.score(query, [paraphrase, distant_match, other])
    assert list(np.argsort(-clear_lead)) == [0, 2, 1]


def test_ranked_cuts_to_top_n_and_breaks_ties_by_input_order() -> None:
    results = ranked(np.array([0.2, 0.9, 0.2, 0.5]), top_n=3)

    assert [r.index for r in results] == [1, 3, 0]


# --- the cross-encoder runner -----------------------------------------------------------


def test_cross_encoder_scores_match_the_graphs_arithmetic(
    tiny_model: tuple[Path, dict[str, Any]],
) -> None:
    folder, weights = tiny_model
    scorer = CrossEncoderScorer.from_source(str(folder), chunk_size=3)

    logits = scorer.logits(CE_QUERY, CE_PASSAGES)
    scores = scorer.score(CE_QUERY, CE_PASSAGES)

    expected = np.array([logits_by_hand(weights, CE_QUERY, p) for p in CE_PASSAGES])
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores, 1.0 / (1.0 + np.exp(-expected[:, 0])), rtol=1e-5)
    assert ranked(scores)[0].index == 1
    assert list(np.argsort(-scores)) == list(np.argsort(-expected[:, 0]))
    assert scorer.name == folder.name


def test_a_two_logit_cross_encoder_scores_the_relevant_class(tmp_path: Path) -> None:
    weights = build_tiny_cross_encoder(tmp_path, classes=2)
    scorer = make_scorer("cross-encoder", str(tmp_path))

    scores = scorer.score(CE_QUERY, CE_PASSAGES)

    expected = np.array([logits_by_hand(weights, CE_QUERY, p) for p in CE_PASSAGES])
    softmax = np.exp(expected) / np.exp(expected).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(scores, softmax[:, 1], rtol=1e-5)
    assert int(np.argmax(scores)) == 1


def test_cross_encoder_needs_a_model_source(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="model_source"):
        RerankerArgs(method="cross-encoder")
    with pytest.raises(ModelSourceError, match=r"model\.onnx"):
        make_scorer("cross-encoder", str(tmp_path))


# --- the deployment ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def reranker_app(model_apps: SharedApps) -> str:
    return model_apps.url("reranker")


@pytest.fixture(scope="module")
def cross_encoder_app(
    serve_instance: LocalServe, tiny_model: tuple[Path, dict[str, Any]]
) -> Iterator[str]:
    from ray import serve

    # A tiny queue, so that the overload test can fill it.
    application = build_app(
        {
            "method": "cross-encoder",
            "model_source": str(tiny_model[0]),
            "max_ongoing_requests": 1,
            "max_queued_requests": 1,
        }
    )
    serve.run(application, name="reranker-ce", route_prefix="/reranker-ce")
    try:
        yield f"{serve_instance.http_url}/reranker-ce"
    finally:
        serve.delete("reranker-ce")


@pytest.fixture
async def clients(reranker_app: str) -> AsyncIterator[tuple[RerankerClient, RerankerClient]]:
    async with (
        RerankerClient(mode="handle") as by_handle,
        RerankerClient(mode="http", base_url=reranker_app) as by_http,
    ):
        yield by_handle, by_http


@pytest.mark.integration
async def test_both_paths_report_the_model_time_of_the_call(
    clients: tuple[RerankerClient, RerankerClient],
) -> None:
    request = RerankRequest(query=QUERY, documents=PASSAGES)

    answers = [await client.create_rerank(request) for client in clients]

    for answer in answers:
        assert answer.model_time_ms is not None
        assert answer.model_time_ms > 0
        assert "model_time_ms" not in answer.model_dump_json()


async def test_the_deployment_reranks_and_both_client_paths_agree(
    clients: tuple[RerankerClient, RerankerClient],
) -> None:
    by_handle, by_http = clients

    from_handle = await by_handle.rerank(QUERY, PASSAGES)
    from_http = await by_http.rerank(QUERY, PASSAGES)

    assert from_handle[0].index == RELEVANT
    assert sorted(r.index for r in from_handle) == list(range(len(PASSAGES)))
    assert from_handle == from_http
    assert [r.relevance_score for r in from_handle] == sorted(
        (r.relevance_score for r in from_handle), reverse=True
    )


@pytest.mark.integration
async def test_top_n_cuts_the_results(clients: tuple[RerankerClient, RerankerClient]) -> None:
    by_handle, by_http = clients

    for client in clients:
        results = await client.rerank(QUERY, PASSAGES, top_n=2)
        assert [r.index for r in results][:1] == [RELEVANT]
        assert len(results) == 2
    response = await by_http.create_rerank(RerankRequest(query=QUERY, documents=PASSAGES, top_n=9))
    assert len(response.results) == len(PASSAGES)
    assert response.model == "bm25+all-MiniLM-L6-v2"
    assert await by_handle.rerank(QUERY, []) == []


@pytest.mark.integration
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"query": "q", "documents": []}, 400, "invalid_request"),
        ({"query": "", "documents": ["a"]}, 400, "invalid_request"),
        ({"query": "q", "documents": ["a"], "top_n": 0}, 400, "invalid_request"),
        ({"query": "q", "documents": "not a list"}, 400, "invalid_request"),
        ({"documents": ["a"]}, 400, "invalid_request"),
        ({"query": "q", "documents": ["a"] * (MAX_RERANK_DOCUMENTS + 1)}, 413, "too_large"),
        ({"query": "q", "documents": ["a" * 8001]}, 413, "too_large"),
    ],
)
async def test_bad_requests_get_the_error_shape_and_the_service_keeps_serving(
    reranker_app: str, body: dict[str, Any], status: int, code: str
) -> None:
    async with httpx.AsyncClient(base_url=reranker_app, timeout=60) as http:
        bad = await http.post("/v1/rerank", json=body)
        good = await http.post("/v1/rerank", json={"query": QUERY, "documents": PASSAGES})

    assert bad.status_code == status
    assert bad.json()["error"]["code"] == code
    assert good.status_code == 200
    assert good.json()["results"][0]["index"] == RELEVANT


@pytest.mark.integration
async def test_malformed_json_is_an_invalid_request(reranker_app: str) -> None:
    async with httpx.AsyncClient(base_url=reranker_app, timeout=60) as http:
        response = await http.post(
            "/v1/rerank", content=b"{not json", headers={"Content-Type": "application/json"}
        )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


@pytest.mark.integration
async def test_bad_handle_calls_raise_typed_errors(
    clients: tuple[RerankerClient, RerankerClient],
) -> None:
    by_handle, _ = clients

    with pytest.raises(TooLargeError):
        await by_handle.rerank(QUERY, ["x"] * (MAX_RERANK_DOCUMENTS + 1))
    with pytest.raises(InvalidRequestError):
        await by_handle._call("rerank", {"query": QUERY}, "/v1/rerank")
    assert (await by_handle.rerank(QUERY, PASSAGES))[0].index == RELEVANT


@pytest.mark.integration
async def test_the_deployment_runs_a_configured_cross_encoder(
    cross_encoder_app: str, tiny_model: tuple[Path, dict[str, Any]]
) -> None:
    _, weights = tiny_model
    expected = np.array([logits_by_hand(weights, CE_QUERY, p)[0] for p in CE_PASSAGES])

    async with (
        RerankerClient(mode="handle", app_name="reranker-ce") as by_handle,
        RerankerClient(mode="http", base_url=cross_encoder_app) as by_http,
    ):
        from_handle = await by_handle.rerank(CE_QUERY, CE_PASSAGES)
        from_http = await by_http.rerank(CE_QUERY, CE_PASSAGES)

    assert from_handle == from_http
    assert [r.index for r in from_handle] == list(np.argsort(-expected, kind="stable"))
    assert from_handle[0].index == 1
    scores = {r.index: r.relevance_score for r in from_handle}
    np.testing.assert_allclose(
        [scores[i] for i in range(len(CE_PASSAGES))], 1.0 / (1.0 + np.exp(-expected)), rtol=1e-5
    )


@pytest.mark.integration
async def test_an_overloaded_deployment_answers_503_with_retry_after(
    cross_encoder_app: str,
) -> None:
    body = {"query": CE_QUERY, "documents": ["paris is the capital of france " * 40] * 1000}
    async with httpx.AsyncClient(base_url=cross_encoder_app, timeout=120) as http:
        responses = await asyncio.gather(*(http.post("/v1/rerank", json=body) for _ in range(12)))
        after = await http.post("/v1/rerank", json={"query": CE_QUERY, "documents": CE_PASSAGES})

    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 503}, statuses
    assert 200 in statuses
    rejected = [r for r in responses if r.status_code == 503]
    assert rejected, statuses
    assert all(r.headers.get("Retry-After") == "1" for r in rejected)
    assert after.status_code == 200
