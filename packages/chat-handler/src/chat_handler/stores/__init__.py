"""Knowledge stores: the :class:`KnowledgeStore` protocol, Milvus and in-memory."""

from typing import Literal

from chat_handler.stores.base import CollectionInfo, KnowledgeRecord, KnowledgeStore
from chat_handler.stores.memory import InMemoryStore
from chat_handler.stores.milvus import MilvusStore, milvus_expression, quote_string
from handler_base.settings import Settings

StoreKind = Literal["milvus", "memory"]
"""``milvus``: Milvus Lite under ``DATA_DIR``, or the server ``MILVUS_URI`` names.
``memory``: this process's memory, empty at start."""


def open_store(kind: StoreKind, settings: Settings) -> KnowledgeStore:
    """The knowledge store of ``kind`` (nothing is connected yet)."""
    if kind == "memory":
        return InMemoryStore(settings)
    return MilvusStore(settings)


__all__ = [
    "CollectionInfo",
    "InMemoryStore",
    "KnowledgeRecord",
    "KnowledgeStore",
    "MilvusStore",
    "StoreKind",
    "milvus_expression",
    "open_store",
    "quote_string",
]
