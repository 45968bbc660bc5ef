"""The embeddings deployment: ``POST /embeddings/v1/embeddings``, OpenAI-shaped.

all-MiniLM-L6-v2 (int8 ONNX, 384 dimensions) on onnxruntime by default, through
:class:`~ray_inference.text_encoder.TextEncoder`. Texts are batched dynamically with
``@serve.batch``: each text of each request, whether it came by handle or over HTTP,
joins a queue, and up to ``max_batch_size`` texts waiting at once run through the model
together (a request with many texts is cut into such batches, and texts of concurrent
requests share them). ``max_batch_size=1`` turns batching off (the benchmark compares
both).

Handle calls use :meth:`EmbeddingsDeployment.embed` with an
:class:`~handler_base.inference.EmbeddingsRequest` and get an
:class:`~handler_base.inference.EmbeddingsResponse`, as the HTTP route does.
"""

# No `from __future__ import annotations`: through `serve.ingress`, FastAPI must see the
# route's body model itself, not its name.

import asyncio
import base64
from collections import Counter, deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import FastAPI, Response
from numpy.typing import NDArray
from pydantic import Field
from ray import serve
from ray.serve import Application

from handler_base.deployment import bind_deployment
from handler_base.errors import validate_as
from handler_base.http import configure_guard, platform_app
from handler_base.inference import (
    MODEL_TIME_HEADER,
    Embedding,
    EmbeddingsRequest,
    EmbeddingsResponse,
    Usage,
)
from handler_base.services import EMBEDDINGS
from ray_inference.model_time import run_timed
from ray_inference.profiles import DeploymentResources, ProfileResources
from ray_inference.spec import ModelAppSpec, ServiceArgs
from ray_inference.text_encoder import (
    DEFAULT_ENCODER_NAME,
    DEFAULT_ENCODER_SOURCE,
    DEFAULT_ENCODER_TOKENIZER_SOURCE,
    ENCODER_MAX_TOKENS,
    Device,
    TextEncoder,
)

DEFAULT_MAX_BATCH_SIZE = 64
"""Texts run through the model at once."""
DEFAULT_BATCH_WAIT_TIMEOUT_S = 0.01
"""How long the first text of a batch waits for others."""
RECENT_BATCHES = 1_000
"""Batch sizes kept for :meth:`EmbeddingsDeployment.stats`."""

api: FastAPI = platform_app(
    "Embeddings",
    "OpenAI-style text embeddings: all-MiniLM-L6-v2 on onnxruntime.",
    max_body_bytes=EMBEDDINGS.max_body_bytes,
)


def vector_base64(vector: NDArray[np.float32]) -> str:
    """The OpenAI ``base64`` form of a vector: its little-endian float32 bytes."""
    return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")


class EmbeddingsArgs(ServiceArgs):
    """Builder arguments of the embeddings application (the Serve config's ``args``).

    Attributes:
        model_source: The ONNX encoder (file, or folder with ``model.onnx``).
        tokenizer_source: Its ``tokenizer.json``; None: the one beside the model.
        model_name: The ``model`` answered in responses.
        max_tokens: Tokens read of each text.
        max_batch_size: Texts run through the model at once; 1 turns batching off.
        batch_wait_timeout_s: How long a batch waits to fill.
        threads: onnxruntime threads.
    """

    service = EMBEDDINGS
    profile_resources = ProfileResources(
        cpu=DeploymentResources(num_cpus=0.2, max_ongoing_requests=64, max_queued_requests=256),
        gpu=DeploymentResources(
            num_cpus=1, num_gpus=0.8, max_ongoing_requests=128, max_queued_requests=512
        ),
    )

    model_source: str = DEFAULT_ENCODER_SOURCE
    tokenizer_source: str | None = DEFAULT_ENCODER_TOKENIZER_SOURCE
    model_name: str = DEFAULT_ENCODER_NAME
    max_tokens: int = Field(default=ENCODER_MAX_TOKENS, ge=8, le=8192)
    max_batch_size: int = Field(default=DEFAULT_MAX_BATCH_SIZE, ge=1, le=1024)
    batch_wait_timeout_s: float = Field(default=DEFAULT_BATCH_WAIT_TIMEOUT_S, ge=0.0, le=1.0)
    threads: int = Field(default=2, ge=1, le=64)


@dataclass(frozen=True, slots=True)
class BatchRun:
    """One model run of a batch: how many texts it held and how long the model took."""

    size: int
    model_time_ms: float


class BatchStats:
    """Achieved batch sizes of a replica: a histogram and the most recent sizes."""

    def __init__(self, recent: int = RECENT_BATCHES) -> None:
        """Count nothing yet; keep the last ``recent`` sizes."""
        self.histogram: Counter[int] = Counter()
        self.recent: deque[int] = deque(maxlen=recent)

    def record(self, size: int) -> None:
        """Count one model run of ``size`` texts."""
        self.histogram[size] += 1
        self.recent.append(size)

    def as_dict(self) -> dict[str, Any]:
        """``batches``, ``texts``, ``max``, ``mean``, ``histogram`` (size: runs), ``recent``."""
        batches = sum(self.histogram.values())
        texts = sum(size * n for size, n in self.histogram.items())
        return {
            "batches": batches,
            "texts": texts,
            "max": max(self.histogram, default=0),
            "mean": round(texts / batches, 2) if batches else 0.0,
            "histogram": {str(size): n for size, n in sorted(self.histogram.items())},
            "recent": list(self.recent),
        }


@serve.deployment(name=EMBEDDINGS.deployment)
@serve.ingress(api)
class EmbeddingsDeployment:
    """Sentence embeddings, batched dynamically across requests."""

    def __init__(self, args: EmbeddingsArgs) -> None:
        """Load the encoder (once per replica) that ``args`` name."""
        configure_guard(api, args.admission())
        self.model_name = args.model_name
        device: Device = "cuda" if args.uses_gpu else "cpu"
        self._encoder = TextEncoder.from_sources(
            args.model_source,
            args.tokenizer_source,
            max_tokens=args.max_tokens,
            threads=args.threads,
            chunk_size=max(args.max_batch_size, 1),
            device=device,
        )
        # One model run at a time, off the event loop.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embeddings")
        self._batches = BatchStats()
        self._max_batch_size = args.max_batch_size
        self._batch_wait_timeout_s = args.batch_wait_timeout_s
        # The setters `@serve.batch` adds are not in its type stubs.
        self._encode_text.set_max_batch_size(args.max_batch_size)  # type: ignore[attr-defined]
        self._encode_text.set_batch_wait_timeout_s(  # type: ignore[attr-defined]
            args.batch_wait_timeout_s
        )

    @api.post("/v1/embeddings")
    async def create_embeddings(
        self, body: EmbeddingsRequest, response: Response
    ) -> EmbeddingsResponse:
        """The OpenAI embeddings route; the model time goes in the ``X-Model-Time-Ms`` header."""
        result = await self.embed(body)
        response.headers[MODEL_TIME_HEADER] = f"{result.model_time_ms or 0.0:.3f}"
        return result

    @api.get("/stats")
    async def get_stats(self) -> dict[str, Any]:
        """The achieved batch sizes (see :meth:`stats`)."""
        return await self.stats()

    async def stats(self) -> dict[str, Any]:
        """Achieved batch sizes of this replica, and the batching settings.

        See :meth:`BatchStats.as_dict`.
        """
        return {
            "max_batch_size": self._max_batch_size,
            "batch_wait_timeout_s": self._batch_wait_timeout_s,
            **self._batches.as_dict(),
        }

    async def embed(self, request: EmbeddingsRequest | Mapping[str, Any]) -> EmbeddingsResponse:
        """Embed the request's texts (the handle method).

        Args:
            request: The texts; ``encoding_format`` ``"base64"`` answers each vector as
                base64 of little-endian float32.

        Returns:
            One unit vector per text, in input order, and the tokens read.

        Raises:
            InvalidRequestError: The request is malformed.
            TooLargeError: It breaks a size limit (too many or too long texts).
        """
        request = validate_as(EmbeddingsRequest, request)
        encoded = await asyncio.gather(*(self._encode_text(text) for text in request.texts))
        data = [
            Embedding(
                index=i,
                embedding=(
                    vector_base64(vector)
                    if request.encoding_format == "base64"
                    else vector.tolist()
                ),
            )
            for i, (vector, _, _) in enumerate(encoded)
        ]
        tokens = sum(count for _, count, _ in encoded)
        # The compute of each batch the request's texts rode in, each batch once.
        runs = {id(run): run for _, _, run in encoded}
        return EmbeddingsResponse(
            data=data,
            model=self.model_name,
            usage=Usage(prompt_tokens=tokens, total_tokens=tokens),
            model_time_ms=sum(run.model_time_ms for run in runs.values()),
        )

    @serve.batch(
        max_batch_size=DEFAULT_MAX_BATCH_SIZE, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_TIMEOUT_S
    )
    async def _encode_text(
        self, texts: list[str]
    ) -> list[tuple[NDArray[np.float32], int, BatchRun]]:
        """Vector, token count and batch run of each text of a batch (called with one text)."""
        self._batches.record(len(texts))
        result, model_time_ms = await run_timed(self._executor, self._encoder.encode, texts)
        run = BatchRun(len(texts), model_time_ms)
        return [
            (vector, count, run)
            for vector, count in zip(result.vectors, result.token_counts, strict=True)
        ]


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The embeddings application (``import_path: ray_inference.embeddings:build_app``).

    Args:
        args: :class:`EmbeddingsArgs` fields.

    Returns:
        The bound deployment; nothing is loaded until a replica starts.
    """
    return bind_deployment(EmbeddingsDeployment, EmbeddingsArgs.model_validate(args or {}))


SPEC = ModelAppSpec(EmbeddingsArgs, build_app)
"""The embeddings application: ``/embeddings``, :class:`EmbeddingsArgs`, :func:`build_app`."""

app = build_app()
