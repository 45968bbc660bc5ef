"""Documents and their chunks: loading ``.txt``, ``.md``, ``.html`` and ``.pdf``, chunking.

Text and Markdown are read as UTF-8; HTML with the standard library's parser (the visible
text, paragraph by paragraph; scripts and styles dropped); PDF with pypdf (the text layer
of each page: a scanned PDF without one has no text, and says so).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from handler_base.errors import InvalidRequestError, UnavailableError
from handler_base.rag.chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE, chunk_text

_MARKDOWN_TITLE = re.compile(r"^#[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n[ \t]*(?:\n[ \t]*)+")
_SPACES = re.compile(r"[ \t\r\f\v]+")


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


def record_id(doc_id: str, chunk_index: int, text: str) -> str:
    """The id of a chunk: SHA-256 (hex) of its document id, position and text.

    "The same chunk" is the same text at the same position of the same document, so
    ingesting it again (into any collection) gives the same id and the store keeps it
    once. The vector and the metadata are not part of the id: re-ingesting a chunk with
    a new embedding model or new metadata updates it in place. The same text in two
    documents is two chunks, so deleting one document leaves the other whole.

    Returns:
        64 lowercase hex characters.
    """
    key = json.dumps([doc_id, chunk_index, text], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def markdown_title(text: str) -> str | None:
    """The text of the first level-one heading (``# Title``), or None."""
    match = _MARKDOWN_TITLE.search(text)
    return match.group(1).strip() if match else None


def load_document(path: str | Path, doc_id: str | None = None) -> Document:
    """Read a ``.txt``, ``.md``, ``.html`` or ``.pdf`` file as a Document.

    The metadata holds ``path`` (as given) and, when the file has one, ``title``: the
    first ``# `` heading of Markdown (kept as written: the model reads it well), the
    ``<title>`` (or first ``<h1>``) of HTML, the title in a PDF's document information.

    Args:
        path: The file.
        doc_id: The document's id; the path as given (POSIX form) when None.

    Returns:
        The document.

    Raises:
        InvalidRequestError: The type is not supported, or the file cannot be read as one.
        OSError: The file cannot be read.
    """
    file = Path(path)
    reader = _reader_of(file.name)
    text, title = reader(file.read_bytes(), file.name)
    metadata: dict[str, Any] = {"path": file.as_posix()}
    if title:
        metadata["title"] = title
    return Document(id=doc_id or file.as_posix(), title=title, text=text, metadata=metadata)


def parse_document(data: bytes, name: str) -> tuple[str, str | None]:
    """The text and title (or None) of a file's bytes, read by the type its name says.

    Args:
        data: The file's content.
        name: The file's name; its suffix picks the reader.

    Raises:
        InvalidRequestError: The type is not supported, or ``data`` is not such a file.
    """
    return _reader_of(name)(data, name)


def _decode_utf8(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(f"{name!r} is not UTF-8 text: {exc.reason}") from None


def _read_text(data: bytes, name: str) -> tuple[str, str | None]:
    return _decode_utf8(data, name), None


def _read_markdown(data: bytes, name: str) -> tuple[str, str | None]:
    text = _decode_utf8(data, name)
    return text, markdown_title(text)


class _VisibleText(HTMLParser):
    """Collects the text a browser shows, a paragraph per block element, and the title."""

    _HIDDEN = frozenset({"script", "style", "noscript", "template", "svg", "head"})
    _BLOCKS = frozenset(
        {"p", "div", "br", "li", "ul", "ol", "tr", "table", "section", "article", "header",
         "footer", "nav", "aside", "main", "blockquote", "pre", "hr", "dd", "dt", "figure",
         "h1", "h2", "h3", "h4", "h5", "h6"}
    )  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self.first_h1 = ""
        self._hidden_depth = 0
        self._in: str | None = None  # "title" or "h1" while inside one
        self._h1_seen = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self._hidden_depth += 1
        if tag in ("title", "h1"):
            self._in = tag
        if tag in self._BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN and self._hidden_depth:
            self._hidden_depth -= 1
        if tag == self._in:
            self._in = None
            self._h1_seen = self._h1_seen or tag == "h1"
        if tag in self._BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in == "title":
            self.title += data
            return
        if self._hidden_depth:
            return
        if self._in == "h1" and not self._h1_seen:
            self.first_h1 += data
        self.parts.append(data)

    def text(self) -> str:
        flat = _SPACES.sub(" ", "".join(self.parts).replace("\xa0", " "))
        return _BLANK_LINES.sub("\n\n", flat).strip()


def _read_html(data: bytes, name: str) -> tuple[str, str | None]:
    parser = _VisibleText()
    parser.feed(_decode_utf8(data, name))
    parser.close()
    title = " ".join(parser.title.split()) or " ".join(parser.first_h1.split())
    return parser.text(), title or None


def _read_pdf(data: bytes, name: str) -> tuple[str, str | None]:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError:
        raise UnavailableError(
            f"cannot read {name!r}: PDF support is not installed (pip install 'handler-base[pdf]')"
        ) from None

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise InvalidRequestError(f"{name!r} is an encrypted PDF; decrypt it first")
        pages = [page.extract_text() or "" for page in reader.pages]
        info_title = reader.metadata.title if reader.metadata else None
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise InvalidRequestError(f"{name!r} is not a readable PDF: {exc}") from None
    text = "\n\n".join(page.strip() for page in pages if page.strip())
    if not text:
        raise InvalidRequestError(
            f"{name!r} has no text layer (a scanned PDF?); it needs OCR before ingestion"
        )
    title = " ".join(str(info_title).split()) if info_title else None
    return text, title or None


_READERS: dict[str, Callable[[bytes, str], tuple[str, str | None]]] = {
    ".txt": _read_text,
    ".md": _read_markdown,
    ".markdown": _read_markdown,
    ".html": _read_html,
    ".htm": _read_html,
    ".pdf": _read_pdf,
}

SUPPORTED_SUFFIXES = frozenset(_READERS)
"""File suffixes :func:`load_document` reads."""


def _reader_of(name: str) -> Callable[[bytes, str], tuple[str, str | None]]:
    reader = _READERS.get(Path(name).suffix.lower())
    if reader is None:
        raise InvalidRequestError(
            f"cannot read {name!r}: supported types are {sorted(SUPPORTED_SUFFIXES)}"
        )
    return reader


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
