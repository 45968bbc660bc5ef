"""Documents and their chunks: loading ``.txt`` and ``.md`` files, chunking them.

``.pdf`` and ``.html`` are not read: no well-kept library for them (pypdf,
BeautifulSoup) is a dependency of the platform yet.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from handler_base.clients.milvus import KnowledgeRecord, record_id
from handler_base.errors import InvalidRequestError
from handler_base.rag.chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE, chunk_text

SUPPORTED_SUFFIXES = frozenset({".txt", ".md", ".markdown"})
"""File suffixes :func:`load_document` reads."""

_MARKDOWN_TITLE = re.compile(r"^#[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


class Document(BaseModel):
    """A text to put in the knowledge base.

    Attributes:
        id: The document's id, which its chunks carry as ``doc_id``.
        title: A title for citations, when the document has one.
        text: The whole text.
        metadata: Kept on every chunk (JSON values; not ``doc_id`` or ``chunk_index``).
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    title: str | None = None
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class Chunk(BaseModel):
    """A piece of a document, as stored in the knowledge base.

    Attributes:
        doc_id: The document's id.
        chunk_index: The chunk's position in the document, from 0.
        text: The chunk's text.
        metadata: The document's metadata plus ``title`` (or ``path``) when known.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    doc_id: str
    chunk_index: int = Field(ge=0)
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def id(self) -> str:
        """The record id: derived from the content, so re-ingesting it adds nothing."""
        return record_id(self.doc_id, self.chunk_index, self.text)

    def to_record(self, vector: Sequence[float]) -> KnowledgeRecord:
        """The chunk with its embedding, ready for :meth:`MilvusClient.upsert`."""
        return KnowledgeRecord(
            text=self.text,
            vector=list(vector),
            doc_id=self.doc_id,
            chunk_index=self.chunk_index,
            metadata=self.metadata,
        )


def markdown_title(text: str) -> str | None:
    """The text of the first level-one heading (``# Title``), or None."""
    match = _MARKDOWN_TITLE.search(text)
    return match.group(1).strip() if match else None


def load_document(path: str | Path, doc_id: str | None = None) -> Document:
    """Read a ``.txt`` or ``.md`` file as a Document.

    Markdown is kept as written (the model reads it well); its first ``# `` heading is
    the title. The metadata holds ``path`` (as given) and, when there is one, ``title``.

    Args:
        path: The file, UTF-8.
        doc_id: The document's id; the path as given (POSIX form) when None.

    Returns:
        The document.

    Raises:
        InvalidRequestError: The suffix is not supported, or the file is not UTF-8.
        OSError: The file cannot be read.
    """
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise InvalidRequestError(
            f"cannot read {file.name!r}: supported types are {sorted(SUPPORTED_SUFFIXES)}"
        )
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(f"{file.name!r} is not UTF-8 text: {exc.reason}") from None
    title = markdown_title(text) if suffix != ".txt" else None
    metadata: dict[str, Any] = {"path": file.as_posix()}
    if title:
        metadata["title"] = title
    return Document(id=doc_id or file.as_posix(), title=title, text=text, metadata=metadata)


def chunk_document(
    document: Document,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    overlap: int = DEFAULT_CHUNK_OVERLAP,
) -> list[Chunk]:
    """Cut a document into chunks of whole sentences (see :func:`chunk_text`).

    Each chunk's metadata is the document's, plus ``title`` when the document has one.

    Args:
        document: The document.
        chunk_size: Characters per chunk at most.
        overlap: Characters of whole sentences repeated from the previous chunk.

    Returns:
        The chunks, numbered from 0; none for an empty document.
    """
    metadata = dict(document.metadata)
    if document.title:
        metadata.setdefault("title", document.title)
    return [
        Chunk(doc_id=document.id, chunk_index=index, text=text, metadata=metadata)
        for index, text in enumerate(chunk_text(document.text, chunk_size, overlap))
    ]
