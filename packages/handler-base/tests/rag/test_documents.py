from pathlib import Path

import pytest

from handler_base.errors import InvalidRequestError
from handler_base.rag.documents import Document, chunk_document, load_document, markdown_title


def test_markdown_takes_the_first_level_one_heading_as_title(tmp_path: Path) -> None:
    file = tmp_path / "guide.md"
    file.write_text("Intro line.\n\n## Not this\n\n# The Guide #\n\nBody text. More.\n")
    document = load_document(file)
    assert document.title == "The Guide"
    assert document.id == file.as_posix()
    assert document.metadata == {"path": file.as_posix(), "title": "The Guide"}
    assert "Body text. More." in document.text


def test_text_files_have_no_title_and_keep_a_given_id(tmp_path: Path) -> None:
    file = tmp_path / "notes.txt"
    file.write_text("# not a heading in plain text\nHello.", encoding="utf-8")
    document = load_document(file, doc_id="notes")
    assert document.id == "notes"
    assert document.title is None
    assert document.metadata == {"path": file.as_posix()}


def test_markdown_without_heading_has_no_title() -> None:
    assert markdown_title("#hashtag\n## Sub\ntext") is None


@pytest.mark.parametrize("name", ["report.pdf", "page.html", "data.bin"])
def test_unsupported_types_are_invalid_requests(tmp_path: Path, name: str) -> None:
    file = tmp_path / name
    file.write_bytes(b"x")
    with pytest.raises(InvalidRequestError, match="supported types"):
        load_document(file)


def test_non_utf8_text_is_an_invalid_request(tmp_path: Path) -> None:
    file = tmp_path / "latin.txt"
    file.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(InvalidRequestError, match="not UTF-8"):
        load_document(file)


def test_chunks_carry_doc_id_index_title_and_metadata() -> None:
    document = Document(
        id="doc-1",
        title="Manual",
        text=" ".join(f"Step {i} is done carefully." for i in range(30)),
        metadata={"lang": "en"},
    )
    chunks = chunk_document(document, chunk_size=120, overlap=30)
    assert len(chunks) > 1
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    assert all(c.doc_id == "doc-1" for c in chunks)
    assert all(c.metadata == {"lang": "en", "title": "Manual"} for c in chunks)
    assert len({c.id for c in chunks}) == len(chunks)
    # The id is derived from the content: the same document chunks to the same ids.
    assert [c.id for c in chunk_document(document, 120, 30)] == [c.id for c in chunks]


def test_a_chunk_becomes_a_knowledge_record() -> None:
    (chunk,) = chunk_document(Document(id="d", text="Hello there."))
    record = chunk.to_record([0.5, 0.5])
    assert record.id == chunk.id
    assert (record.doc_id, record.chunk_index, record.text) == ("d", 0, "Hello there.")


def test_an_empty_document_has_no_chunks() -> None:
    assert chunk_document(Document(id="d", text="   ")) == []
