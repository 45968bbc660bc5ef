"""Clients of the platform's services: a Ray Serve handle first, HTTP as the fallback."""

from handler_base.clients.base import CallPath, ClientMode, ServerSentEvent, ServiceClient
from handler_base.clients.milvus import (
    CollectionInfo,
    KnowledgeRecord,
    MilvusClient,
    quote_string,
    record_id,
)

__all__ = [
    "CallPath",
    "ClientMode",
    "CollectionInfo",
    "KnowledgeRecord",
    "MilvusClient",
    "ServerSentEvent",
    "ServiceClient",
    "quote_string",
    "record_id",
]
