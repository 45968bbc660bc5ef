from pathlib import Path

import pytest

from aictl.web.assets import CONTENT_TYPES, INDEX, load_static_files


def test_the_package_ships_the_page_and_its_files() -> None:
    files = load_static_files()
    assert {"index.html", "app.js", "style.css", "recorder-worklet.js"} <= set(files)
    assert files["app.js"].content_type == "text/javascript; charset=utf-8"
    assert b"<main" in files[INDEX].body


def test_every_reference_of_the_page_is_a_shipped_file() -> None:
    files = load_static_files()
    page = files[INDEX].body.decode()
    for name in ("app.js", "style.css"):
        assert f'"static/{name}"' in page
    assert '"recorder-worklet.js"' in files["app.js"].body.decode()
    # Nothing is loaded from elsewhere.
    for file in files.values():
        assert b"http://" not in file.body
        assert b"https://" not in file.body


def test_only_known_types_are_served_and_the_index_is_required(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("private")
    (tmp_path / "page.css").write_text("body {}")
    with pytest.raises(FileNotFoundError, match=r"index\.html"):
        load_static_files(tmp_path)
    (tmp_path / INDEX).write_text("<p>hi</p>")
    files = load_static_files(tmp_path)
    assert set(files) == {INDEX, "page.css"}
    assert files["page.css"].content_type == CONTENT_TYPES[".css"]
