"""The reranker deployment: ``POST /reranker/v1/rerank`` (the Cohere/Jina shape).

Two scorers sit behind one interface (:class:`Scorer`), chosen by the builder argument
``method``:

- ``"hybrid"`` (the default; needs no downloaded weights): Okapi BM25 over the request's
  documents, fused with the cosine similarity of the all-MiniLM-L6-v2 sentence vectors
  (:class:`HybridScorer`; the cosine's share is :data:`DEFAULT_DENSE_WEIGHT`). Fusion is
  a weighted sum of scores on a fixed scale, not reciprocal rank fusion: RRF keeps only
  ranks, so its scores mean nothing on their own, a strong lexical match counts no more
  than a weak one, and with two signals over ten or so candidates it ties often. The
  fused score is in ``[0, 1]``, can be read as a relevance, and can be thresholded.
- ``"cross-encoder"``: a real cross-encoder exported to ONNX (the layout of
  ``cross-encoder/ms-marco-MiniLM-L-6-v2`` and its kin: ``model.onnx`` or
  ``onnx/model.onnx`` beside ``tokenizer.json``), given as ``model_source``
  (:class:`CrossEncoderScorer`). Query and passage are encoded as a pair (with
  ``token_type_ids``); a single logit becomes a score by the sigmoid, two logits by the
  softmax probability of the second ("relevant") class.
"""

# No `from __future__ import annotations`: through `serve.ingress`, FastAPI must see the
# route's body model itself, not its name.

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, Protocol, Self

import numpy as np
from fastapi import FastAPI, Response
from numpy.typing import NDArray
from pydantic import Field, model_validator
from ray import serve
from ray.serve import Application

from handler_base.deployment import bind_deployment
from handler_base.errors import validate_as
from handler_base.http import configure_guard, platform_app
from handler_base.inference import MODEL_TIME_HEADER, RerankRequest, RerankResponse, RerankResult
from handler_base.services import RERANKER
from ray_inference.model_sources import ModelSourceError
from ray_inference.model_time import run_timed
from ray_inference.profiles import DeploymentResources, ProfileResources
from ray_inference.spec import ModelAppSpec, ServiceArgs
from ray_inference.text_encoder import (
    DEFAULT_ENCODER_NAME,
    DEFAULT_ENCODER_SOURCE,
    DEFAULT_ENCODER_TOKENIZER_SOURCE,
    Device,
    TextEncoder,
    load_tokenizer,
    locate_onnx_model,
    onnx_session,
    pad_encodings,
    pad_id_of,
    session_feed,
)

RerankMethod = Literal["hybrid", "cross-encoder"]

DEFAULT_DENSE_WEIGHT = 0.9
"""Share of the dense cosine in the hybrid score (the rest is BM25).

0.9, chosen on three labelled sets made differently (BENCHMARKS.md, "Retrieval that never
loses to dense"): BM25 then mostly orders passages whose cosines are close, and the
reranker's order is not below dense alone in mean on any set; at 0.5 it was below on
questions that do not use the documents' words.
"""
CROSS_ENCODER_MAX_TOKENS = 512
"""Tokens of one query-passage pair (BERT-style cross-encoders read at most 512)."""

api: FastAPI = platform_app(
    "Reranker",
    "Scores passages against a query: hybrid BM25 + dense, or a cross-encoder.",
    max_body_bytes=RERANKER.max_body_bytes,
)


class Scorer(Protocol):
    """Scores documents against a query; higher is more relevant."""

    @property
    def name(self) -> str:
        """The ``model`` answered in responses."""
        ...

    def score(self, query: str, documents: Sequence[str]) -> NDArray[np.float64]:
        """One score per document, in their order."""
        ...


# --- lexical: BM25 ----------------------------------------------------------------------

_WORD = re.compile(r"[^\W_]+")
STOPWORDS = frozenset(
    (  # noqa: SIM905 (a word list reads best as words)
        "a about an and are as at be been but by can do does for from had has have he her his "
        "how i if in into is it its me my no not of on or our she should so than that the their "
        "them then there these they this to us was we were what when where which who why will "
        "with would you your"
    ).split()
)
"""Words too common to say anything about relevance (English)."""


def lexical_terms(text: str) -> list[str]:
    """The terms BM25 counts: lowercase runs of letters and digits, stopwords dropped.

    A plural ``s`` is cut (``deployments`` counts as ``deployment``); no other stemming.
    """
    terms = []
    for word in _WORD.findall(text.lower()):
        if word in STOPWORDS:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        terms.append(word)
    return terms


class BM25:
    """Okapi BM25 with the request's documents as the corpus.

    Attributes:
        k1: Term-frequency saturation.
        b: Length normalization.
    """

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        """Make a scorer with Lucene's default parameters."""
        self.k1 = k1
        self.b = b

    def scores(self, query: str, documents: Sequence[str]) -> NDArray[np.float64]:
        """Raw BM25 of each document (0 for one that shares no term with the query)."""
        return self._scores(query, documents)[0]

    def normalized_scores(self, query: str, documents: Sequence[str]) -> NDArray[np.float64]:
        """BM25 on ``[0, 1]``, comparable across requests as far as BM25 allows.

        Each score is divided by the larger of the best document's score and the score
        of an "ideal" document of average length holding each query term once (the sum
        of the query terms' IDF). So a document covering the whole query gets about 1
        and one sharing a single common word stays low even when it is the best of a
        poor lot, while the order of BM25 is kept (no clipping).
        """
        raw, ideal = self._scores(query, documents)
        top = max(float(raw.max(initial=0.0)), ideal)
        return raw / top if top > 0 else raw

    def _scores(self, query: str, documents: Sequence[str]) -> tuple[NDArray[np.float64], float]:
        terms = list(dict.fromkeys(lexical_terms(query)))
        scores = np.zeros(len(documents), dtype=np.float64)
        if not terms or not documents:
            return scores, 0.0
        counts = [Counter(lexical_terms(d)) for d in documents]
        lengths = np.array([sum(c.values()) for c in counts], dtype=np.float64)
        average = float(lengths.mean()) or 1.0
        norm = self.k1 * (1.0 - self.b + self.b * lengths / average)
        n = len(documents)
        ideal = 0.0
        for term in terms:
            tf = np.array([c.get(term, 0) for c in counts], dtype=np.float64)
            containing = int(np.count_nonzero(tf))
            idf = math.log(1.0 + (n - containing + 0.5) / (containing + 0.5))
            scores += idf * tf * (self.k1 + 1.0) / (tf + norm)
            ideal += idf
        return scores, ideal


# --- the embedded default: BM25 + dense -------------------------------------------------


class HybridScorer:
    """BM25 fused with the cosine of sentence vectors, as a weighted sum.

    ``score = dense_weight * max(cosine, 0) + (1 - dense_weight) * bm25_normalized``
    (see :meth:`BM25.normalized_scores`); both parts are on ``[0, 1]``. The cosine is
    used as it is (not rescaled per request), so near-equal candidates stay near-equal.
    """

    def __init__(
        self,
        encoder: TextEncoder,
        *,
        dense_weight: float = DEFAULT_DENSE_WEIGHT,
        bm25: BM25 | None = None,
        encoder_name: str = DEFAULT_ENCODER_NAME,
    ) -> None:
        """Fuse ``encoder``'s cosine with BM25.

        Args:
            encoder: The sentence encoder of the dense part.
            dense_weight: Share of the dense part, 0 (BM25 only) to 1 (dense only).
            bm25: The lexical scorer; Lucene's parameters by default.
            encoder_name: Name of the encoder, for :attr:`name`.
        """
        if not 0.0 <= dense_weight <= 1.0:
            raise ValueError(f"dense_weight must be within [0, 1], not {dense_weight}")
        self.encoder = encoder
        self.dense_weight = dense_weight
        self.bm25 = bm25 or BM25()
        self._name = f"bm25+{encoder_name}"

    @property
    def name(self) -> str:
        """``bm25+<encoder>``."""
        return self._name

    def dense_scores(self, query: str, documents: Sequence[str]) -> NDArray[np.float64]:
        """Cosine of the query's vector with each document's."""
        vectors = self.encoder.encode([query, *documents]).vectors.astype(np.float64)
        similarities: NDArray[np.float64] = vectors[1:] @ vectors[0]
        return similarities

    def score(self, query: str, documents: Sequence[str]) -> NDArray[np.float64]:
        """The fused score of each document."""
        lexical = self.bm25.normalized_scores(query, documents)
        if self.dense_weight == 0.0:
            return lexical
        dense = np.clip(self.dense_scores(query, documents), 0.0, 1.0)
        fused: NDArray[np.float64] = self.dense_weight * dense + (1.0 - self.dense_weight) * lexical
        return fused


# --- a real cross-encoder ---------------------------------------------------------------


class CrossEncoderScorer:
    """An ONNX cross-encoder: each (query, passage) pair through the model at once."""

    def __init__(
        self,
        model_path: Path,
        tokenizer_path: Path,
        *,
        name: str | None = None,
        max_tokens: int = CROSS_ENCODER_MAX_TOKENS,
        threads: int = 2,
        chunk_size: int = 16,
        device: Device = "cpu",
    ) -> None:
        """Load the model and its tokenizer.

        Args:
            model_path: The ONNX graph: inputs among ``input_ids``, ``attention_mask``,
                ``token_type_ids``; first output the logits ``[batch, 1]`` (or
                ``[batch]``, or ``[batch, 2]`` for a two-class head).
            tokenizer_path: Its ``tokenizer.json``, with a post-processor that builds
                pairs (``[CLS] q [SEP] p [SEP]`` with type ids 0 and 1 for BERT).
            name: The ``model`` answered in responses; the model's folder name by
                default.
            max_tokens: Tokens of one pair; the longer of the two texts is cut first.
            threads: onnxruntime threads.
            chunk_size: Pairs per model run.
            device: ``"cpu"`` or ``"cuda"``.
        """
        self.tokenizer = load_tokenizer(tokenizer_path, max_tokens)
        self.session = onnx_session(model_path, threads=threads, device=device)
        self.chunk_size = chunk_size
        self._pad_id = pad_id_of(self.tokenizer)
        self._output_name: str = self.session.get_outputs()[0].name
        folder = model_path.parent
        if folder.name == "onnx":
            folder = folder.parent
        self._name = name or folder.name
        # Fail at load, not on the first request, for a graph we cannot feed.
        session_feed(self.session, pad_encodings([], self._pad_id))

    @classmethod
    def from_source(
        cls, model_source: str, tokenizer_source: str | None = None, **options: Any
    ) -> Self:
        """Load from a model source (a folder with ``model.onnx`` and ``tokenizer.json``).

        Args:
            model_source: Folder or ``.onnx`` file, path or ``pkg:MODULE/path``.
            tokenizer_source: The ``tokenizer.json``; None: the one beside the model.
            **options: Passed to :class:`CrossEncoderScorer`.
        """
        model_path, tokenizer_path = locate_onnx_model(model_source, tokenizer_source)
        return cls(model_path, tokenizer_path, **options)

    @property
    def name(self) -> str:
        """The model's name."""
        return self._name

    def logits(self, query: str, documents: Sequence[str]) -> NDArray[np.float64]:
        """The model's raw output for each pair: ``[len(documents), classes]``."""
        encodings = self.tokenizer.encode_batch([(query, d) for d in documents])
        order = sorted(range(len(documents)), key=lambda i: len(encodings[i].ids))
        result: NDArray[np.float64] | None = None
        for start in range(0, len(order), self.chunk_size):
            rows = order[start : start + self.chunk_size]
            arrays = pad_encodings([encodings[i] for i in rows], self._pad_id)
            (output,) = self.session.run([self._output_name], session_feed(self.session, arrays))
            logits = np.asarray(output, dtype=np.float64).reshape(len(rows), -1)
            if result is None:
                result = np.empty((len(documents), logits.shape[1]), dtype=np.float64)
            result[rows] = logits
        if result is None:
            return np.zeros((0, 1), dtype=np.float64)
        return result

    def score(self, query: str, documents: Sequence[str]) -> NDArray[np.float64]:
        """Relevance probability of each document.

        Raises:
            ModelSourceError: The model gives more than two logits per pair.
        """
        logits = self.logits(query, documents)
        if logits.shape[1] == 1:
            probabilities: NDArray[np.float64] = 1.0 / (1.0 + np.exp(-logits[:, 0]))
            return probabilities
        if logits.shape[1] == 2:
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            relevant: NDArray[np.float64] = shifted[:, 1] / shifted.sum(axis=1)
            return relevant
        raise ModelSourceError(
            f"cross-encoder {self.name!r} gives {logits.shape[1]} logits per pair; "
            "expected 1 (a relevance logit) or 2 (irrelevant, relevant)"
        )


def ranked(scores: NDArray[np.float64], top_n: int | None = None) -> list[RerankResult]:
    """Results best first (ties in input order), cut to ``top_n``."""
    order = np.argsort(-scores, kind="stable")
    if top_n is not None:
        order = order[:top_n]
    return [RerankResult(index=int(i), relevance_score=float(scores[i])) for i in order]


def make_scorer(
    method: RerankMethod,
    model_source: str | None = None,
    tokenizer_source: str | None = None,
    *,
    dense_weight: float = DEFAULT_DENSE_WEIGHT,
    max_tokens: int | None = None,
    threads: int = 2,
    device: Device = "cpu",
) -> Scorer:
    """The scorer of ``method``, loaded.

    Args:
        method: ``"hybrid"`` or ``"cross-encoder"``.
        model_source: The model the method runs: the sentence encoder of ``hybrid``
            (all-MiniLM-L6-v2 int8 by default), the cross-encoder folder (required).
        tokenizer_source: Its ``tokenizer.json``; for ``hybrid`` the MiniLM one by
            default (only when ``model_source`` is also the default), else the one
            beside the model.
        dense_weight: ``hybrid`` only: the share of the dense cosine.
        max_tokens: Tokens read of a text (hybrid, 256) or of a pair (cross-encoder, 512).
        threads: onnxruntime threads.
        device: ``"cpu"`` or ``"cuda"``.

    Raises:
        ModelSourceError: A model file is missing, or ``cross-encoder`` has no source.
    """
    if method == "cross-encoder":
        if model_source is None:
            raise ModelSourceError("the cross-encoder method needs a model_source")
        return CrossEncoderScorer.from_source(
            model_source,
            tokenizer_source,
            max_tokens=max_tokens or CROSS_ENCODER_MAX_TOKENS,
            threads=threads,
            device=device,
        )
    if model_source is None:
        model_source = DEFAULT_ENCODER_SOURCE
        tokenizer_source = tokenizer_source or DEFAULT_ENCODER_TOKENIZER_SOURCE
        encoder_name = DEFAULT_ENCODER_NAME
    else:
        encoder_name = Path(model_source.removeprefix("pkg:")).stem
    options: dict[str, Any] = {"threads": threads, "device": device}
    if max_tokens is not None:
        options["max_tokens"] = max_tokens
    encoder = TextEncoder.from_sources(model_source, tokenizer_source, **options)
    return HybridScorer(encoder, dense_weight=dense_weight, encoder_name=encoder_name)


class RerankerArgs(ServiceArgs):
    """Builder arguments of the reranker application (the Serve config's ``args``).

    The fields are :func:`make_scorer`'s.
    """

    service = RERANKER
    profile_resources = ProfileResources(
        cpu=DeploymentResources(num_cpus=0.2, max_ongoing_requests=16, max_queued_requests=64),
        gpu=DeploymentResources(
            num_cpus=1, num_gpus=0.8, max_ongoing_requests=64, max_queued_requests=256
        ),
    )

    method: RerankMethod = "hybrid"
    model_source: str | None = None
    """The cross-encoder folder (required for ``cross-encoder``), or for ``hybrid`` the
    sentence encoder (all-MiniLM-L6-v2 int8 when absent)."""
    tokenizer_source: str | None = None
    dense_weight: float = Field(default=DEFAULT_DENSE_WEIGHT, ge=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=8, le=8192)
    threads: int = Field(default=2, ge=1, le=64)

    @model_validator(mode="after")
    def _cross_encoder_needs_a_model(self) -> Self:
        if self.method == "cross-encoder" and self.model_source is None:
            raise ValueError("method 'cross-encoder' needs model_source (a folder with model.onnx)")
        return self


@serve.deployment(name=RERANKER.deployment)
@serve.ingress(api)
class RerankerDeployment:
    """Reranks passages against a query with the configured scorer."""

    def __init__(self, args: RerankerArgs) -> None:
        """Load the scorer that ``args`` name (once per replica); see :func:`make_scorer`."""
        configure_guard(api, args.admission())
        self.method = args.method
        self._scorer = make_scorer(
            args.method,
            args.model_source,
            args.tokenizer_source,
            dense_weight=args.dense_weight,
            max_tokens=args.max_tokens,
            threads=args.threads,
            device="cuda" if args.uses_gpu else "cpu",
        )
        # One model run at a time, off the event loop.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reranker")

    @api.post("/v1/rerank")
    async def create_rerank(self, body: RerankRequest, response: Response) -> RerankResponse:
        """The rerank route; the model time goes in the ``X-Model-Time-Ms`` header."""
        result = await self.rerank(body)
        response.headers[MODEL_TIME_HEADER] = f"{result.model_time_ms or 0.0:.3f}"
        return result

    async def rerank(self, request: RerankRequest | Mapping[str, Any]) -> RerankResponse:
        """Score the documents against the query (the handle method).

        Returns:
            ``{index, relevance_score}`` per document, best first, at most ``top_n``.

        Raises:
            InvalidRequestError: The request is malformed.
            TooLargeError: Too many or too long documents.
        """
        request = validate_as(RerankRequest, request)
        scores, model_time_ms = await run_timed(
            self._executor, self._scorer.score, request.query, request.documents
        )
        return RerankResponse(
            results=ranked(scores, request.top_n),
            model=self._scorer.name,
            model_time_ms=model_time_ms,
        )


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The reranker application (``import_path: ray_inference.reranker:build_app``).

    Args:
        args: :class:`RerankerArgs` fields.

    Returns:
        The bound deployment; nothing is loaded until a replica starts.
    """
    return bind_deployment(RerankerDeployment, RerankerArgs.model_validate(args or {}))


SPEC = ModelAppSpec(RerankerArgs, build_app)
"""The reranker application: ``/reranker``, :class:`RerankerArgs`, :func:`build_app`."""

app = build_app()
