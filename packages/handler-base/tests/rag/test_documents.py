import io
from pathlib import Path

import pytest
from pypdf import PdfWriter
from pypdf.generic import DictionaryObject, NameObject, StreamObject

from handler_base.errors import InvalidRequestError
from handler_base.rag.documents import (
    Document,
    chunk_document,
    load_document,
    markdown_title,
    parse_document,
)


def make_pdf(pages: list[list[str]], title: str | None = None) -> bytes:
    """A PDF with a real text layer: one line of Helvetica per string, a page per list."""
    writer = PdfWriter()
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    # pypdf has no public call that adds an indirect object to a writer.
    font_ref = writer._add_object(font)
    for lines in pages:
        page = writer.add_blank_page(612, 792)
        ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
        ops += [f"({line}) Tj T*" for line in lines]
        ops.append("ET")
        content = StreamObject()
        content.set_data("\n".join(ops).encode("latin-1"))
        page[NameObject("/Contents")] = writer._add_object(content)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font_ref})}
        )
    if title:
        writer.add_metadata({"/Title": title})
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


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


@pytest.mark.parametrize("name", ["data.bin", "sheet.xlsx", "README"])
def test_unsupported_types_are_invalid_requests(tmp_path: Path, name: str) -> None:
    file = tmp_path / name
    file.write_bytes(b"x")
    with pytest.raises(InvalidRequestError, match="supported types"):
        load_document(file)


def test_pdf_text_of_every_page_and_its_title(tmp_path: Path) -> None:
    file = tmp_path / "manual.pdf"
    file.write_bytes(
        make_pdf(
            [["The ZX-41 costs 417 euros.", "It ships in teal."], ["Dr. Okafor designed it."]],
            title="ZX-41 manual",
        )
    )
    document = load_document(file, doc_id="zx41")
    assert document.id == "zx41"
    assert document.title == "ZX-41 manual"
    assert document.metadata == {"path": file.as_posix(), "title": "ZX-41 manual"}
    assert "The ZX-41 costs 417 euros." in document.text
    assert document.text.index("teal") < document.text.index("Okafor")
    chunks = chunk_document(document)
    assert chunks[0].metadata["title"] == "ZX-41 manual"


def test_pdf_without_title_has_none() -> None:
    text, title = parse_document(make_pdf([["Only text."]]), "plain.pdf")
    assert (text, title) == ("Only text.", None)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not a pdf at all", "not a readable PDF"),
        (b"%PDF-1.7\n%broken", "not a readable PDF"),
        (make_pdf([[]]), "no text layer"),
    ],
)
def test_unreadable_pdfs_are_invalid_requests(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidRequestError, match=reason):
        parse_document(data, "bad.pdf")


HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title> QP-7
  router </title><style>body { color: red }</style>
<script>var secret = "not text";</script></head>
<body><nav><a href="/">Home</a></nav>
<h1>QP-7 router</h1><p>The QP-7 blinks <b>amber</b> while its firmware&nbsp;updates.</p>
<ul><li>Weight: 2.3 kg</li><li>Colour: grey &amp; white</li></ul>
<noscript>Enable JavaScript</noscript></body></html>"""


def test_html_keeps_visible_text_in_paragraphs_and_takes_the_title(tmp_path: Path) -> None:
    file = tmp_path / "qp7.html"
    file.write_text(HTML, encoding="utf-8")
    document = load_document(file)
    assert document.title == "QP-7 router"
    assert "The QP-7 blinks amber while its firmware updates." in document.text
    assert "Weight: 2.3 kg\n\nColour: grey & white" in document.text
    for hidden in ("secret", "color: red", "Enable JavaScript"):
        assert hidden not in document.text


def test_html_without_title_uses_the_first_h1() -> None:
    text, title = parse_document(b"<h1>First</h1><p>Body.</p><h1>Second</h1>", "page.htm")
    assert title == "First"
    assert text == "First\n\nBody.\n\nSecond"


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


def test_an_empty_document_has_no_chunks() -> None:
    assert chunk_document(Document(id="d", text="   ")) == []
