"""Client of the reranker deployment (``/reranker``): passages ordered by relevance."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from handler_base.clients.base import ServiceClient
from handler_base.errors import error_from_validation
from handler_base.inference import RerankRequest, RerankResponse, RerankResult
from handler_base.services import RERANKER


class RerankerClient(ServiceClient):
    """Reranks passages through the ``RerankerDeployment`` handle, or over HTTP.

    ``await RerankerClient().rerank("query", ["passage", ...], top_n=5)`` gives the best
    five as ``{index, relevance_score}``, best first.
    """

    model_service = RERANKER

    async def create_rerank(self, request: RerankRequest) -> RerankResponse:
        """One rerank request, as ``POST /v1/rerank`` takes it.

        Raises:
            PlatformError: What the deployment answered (``invalid_request``,
                ``too_large``, ``unavailable``...).
        """
        result = await self._call("rerank", request, "/v1/rerank")
        return RerankResponse.model_validate(result)

    async def rerank(
        self, query: str, documents: Sequence[str], top_n: int | None = None
    ) -> list[RerankResult]:
        """Score ``documents`` against ``query``; best first, at most ``top_n``.

        No documents give no results (and no call).

        Raises:
            InvalidRequestError: The query is empty or ``top_n`` is below 1.
            TooLargeError: Too many or too long documents.
            PlatformError: What else the deployment answered.
        """
        if not documents:
            return []
        return (await self.rerank_answer(query, documents, top_n)).results

    async def rerank_answer(
        self, query: str, documents: Sequence[str], top_n: int | None = None
    ) -> RerankResponse:
        """The whole answer of :meth:`rerank` (at least one document), with its model time.

        Raises:
            As :meth:`rerank`; ``invalid_request`` for no documents too.
        """
        try:
            request = RerankRequest(query=query, documents=list(documents), top_n=top_n)
        except ValidationError as exc:
            raise error_from_validation(exc) from exc
        return await self.create_rerank(request)
