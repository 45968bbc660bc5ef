"""Client of the embeddings deployment (``/embeddings``): sentence vectors of texts."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from handler_base.clients.base import ServiceClient
from handler_base.errors import error_from_validation
from handler_base.inference import MAX_EMBEDDING_INPUTS, EmbeddingsRequest, EmbeddingsResponse
from handler_base.services import EMBEDDINGS


class EmbeddingsClient(ServiceClient):
    """Embeds texts through the ``EmbeddingsDeployment`` handle, or over HTTP.

    ``await EmbeddingsClient().embed(["a", "b"])`` gives two unit vectors.
    """

    model_service = EMBEDDINGS

    async def create_embeddings(self, request: EmbeddingsRequest) -> EmbeddingsResponse:
        """One embeddings request, as ``POST /v1/embeddings`` takes it.

        Raises:
            PlatformError: What the deployment answered (``invalid_request``,
                ``too_large``, ``unavailable``...).
        """
        result = await self._call("embed", request, "/v1/embeddings")
        return EmbeddingsResponse.model_validate(result)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """The vector of each text, in order.

        Any number of texts: more than one request takes
        (:data:`~handler_base.inference.MAX_EMBEDDING_INPUTS`) are sent in several.
        No texts give no vectors (and no call).

        Raises:
            InvalidRequestError: A text is empty.
            TooLargeError: A text is too long.
            PlatformError: What else the deployment answered.
        """
        vectors: list[list[float]] = []
        for start in range(0, len(texts), MAX_EMBEDDING_INPUTS):
            answer = await self.embed_answer(texts[start : start + MAX_EMBEDDING_INPUTS])
            vectors.extend(answer.vectors)
        return vectors

    async def embed_one(self, text: str) -> list[float]:
        """The vector of one text (a search query, say)."""
        (vector,) = await self.embed([text])
        return vector

    async def embed_answer(self, texts: Sequence[str]) -> EmbeddingsResponse:
        """The whole answer for ``texts`` (at most one request's worth), with its model time.

        Raises:
            InvalidRequestError: No text, or an empty one.
            TooLargeError: Too many texts, or one too long.
            PlatformError: What else the deployment answered.
        """
        try:
            request = EmbeddingsRequest(input=list(texts))
        except ValidationError as exc:
            raise error_from_validation(exc) from exc
        return await self.create_embeddings(request)
