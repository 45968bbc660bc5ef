"""Documents for the knowledge base: loading files and cutting them into chunks.

The RAG pipeline and its prompt live in ``chat_handler.rag``: the chat handler owns them.
"""

from handler_base.rag.chunking import (
    DEFAULT_CHUNK_OVERLAP,
    DEFAULT_CHUNK_SIZE,
    chunk_text,
    split_sentences,
)
from handler_base.rag.documents import (
    Chunk,
    Document,
    chunk_document,
    load_document,
    parse_document,
    record_id,
)

__all__ = [
    "DEFAULT_CHUNK_OVERLAP",
    "DEFAULT_CHUNK_SIZE",
    "Chunk",
    "Document",
    "chunk_document",
    "chunk_text",
    "load_document",
    "parse_document",
    "record_id",
    "split_sentences",
]
