"""Client of the knowledge-base API of the chat application (``/chat/knowledge/...``).

The chat deployment owns the knowledge base (in the embedded stack, the one process that
opens Milvus Lite); everything else, ingestion pipelines included, goes through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

from handler_base.clients.base import ServiceClient
from handler_base.errors import validate_as
from handler_base.knowledge import (
    CollectionsResponse,
    DeleteRequest,
    DeleteResponse,
    IngestRequest,
    IngestResponse,
    SearchRequest,
    SearchResponse,
    VocabularyRequest,
    VocabularyResponse,
)
from handler_base.messages import DEFAULT_COLLECTION


class KnowledgeClient(ServiceClient):
    """Ingests, searches and deletes through the ``ChatDeployment`` handle, or over HTTP.

    ``await KnowledgeClient().ingest({"documents": [{"text": "..."}]})`` stores a
    document (chunked and embedded by the chat deployment) and tells its id and chunk
    count. The HTTP fallback is ``settings.chat_url`` (``CHAT_URL``).
    """

    service: ClassVar[str] = "chat"
    app_name: ClassVar[str] = "chat"
    deployment_name: ClassVar[str] = "ChatDeployment"

    async def ingest(self, request: IngestRequest | Mapping[str, Any]) -> IngestResponse:
        """Store documents (``POST /knowledge/documents``).

        Raises:
            InvalidRequestError: The request is malformed (checked before any call).
            TooLargeError: Too many or too long documents.
            PlatformError: What else the deployment answered.
        """
        body = validate_as(IngestRequest, request)
        result = await self._call("ingest", body, "/knowledge/documents")
        return IngestResponse.model_validate(result)

    async def search(self, request: SearchRequest | Mapping[str, Any]) -> SearchResponse:
        """The passages nearest a query, best first (``POST /knowledge/search``).

        Raises:
            InvalidRequestError: The request is malformed.
            PlatformError: What else the deployment answered.
        """
        body = validate_as(SearchRequest, request)
        result = await self._call("search", body, "/knowledge/search")
        return SearchResponse.model_validate(result)

    async def delete_document(
        self, doc_id: str, collection: str = DEFAULT_COLLECTION
    ) -> DeleteResponse:
        """Delete every chunk of a document (``DELETE /knowledge/documents/{id}``).

        Raises:
            InvalidRequestError: The id or the collection name is malformed.
            PlatformError: What else the deployment answered.
        """
        body = validate_as(DeleteRequest, {"id": doc_id, "collection": collection})
        if await self.path() == "handle":
            result = await self._handle_call("delete_document", body)
        else:
            response = await self._http_request(
                "DELETE",
                f"/knowledge/documents/{quote(body.id, safe='')}",
                params={"collection": body.collection},
            )
            result = response.json()
        return DeleteResponse.model_validate(result)

    async def collections(self) -> CollectionsResponse:
        """The collections and their chunk counts (``GET /knowledge/collections``).

        Raises:
            PlatformError: What the deployment answered.
        """
        result = await self._call("collections", None, "/knowledge/collections", http_method="GET")
        return CollectionsResponse.model_validate(result)

    async def vocabulary(self, collection: str = DEFAULT_COLLECTION) -> VocabularyResponse:
        """The collection's names and rare terms, most salient first.

        ``GET /knowledge/collections/{name}/vocabulary``; gathered at ingest, for
        Whisper's ``hotwords``.

        Raises:
            InvalidRequestError: The collection name is malformed (checked before any call).
            NotFoundError: The collection does not exist.
            PlatformError: What else the deployment answered.
        """
        body = validate_as(VocabularyRequest, {"collection": collection})
        if await self.path() == "handle":
            result = await self._handle_call("vocabulary", body)
        else:
            response = await self._http_request(
                "GET", f"/knowledge/collections/{body.collection}/vocabulary"
            )
            result = response.json()
        return VocabularyResponse.model_validate(result)
