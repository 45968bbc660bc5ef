"""The page's static files, shipped as package data in ``aictl/web/static/``.

They are plain HTML, CSS and JavaScript (no build step, nothing fetched from outside),
read once into memory and answered with their content type.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

STATIC_PACKAGE = "aictl.web"
STATIC_FOLDER = "static"
INDEX = "index.html"

CONTENT_TYPES: dict[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
}
"""The files the page may ship, by suffix; any other file in the folder is not served."""

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "media-src 'self' blob: data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
"""Everything the page loads or calls is on its own origin (the Serve proxy)."""


@dataclass(frozen=True)
class StaticFile:
    """One static file of the page, in memory.

    Attributes:
        name: The file name (``app.js``).
        body: Its bytes.
        content_type: The ``Content-Type`` it is answered with.
    """

    name: str
    body: bytes
    content_type: str


def _suffix(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def static_folder() -> Traversable:
    """The folder of the static files inside the installed package."""
    return files(STATIC_PACKAGE).joinpath(STATIC_FOLDER)


def load_static_files(folder: Traversable | None = None) -> dict[str, StaticFile]:
    """Every servable file of ``folder`` (the package's by default), by name.

    Raises:
        FileNotFoundError: The folder or its ``index.html`` is missing (a broken install).
    """
    root = folder if folder is not None else static_folder()
    found: dict[str, StaticFile] = {}
    for entry in root.iterdir():
        content_type = CONTENT_TYPES.get(_suffix(entry.name))
        if entry.is_file() and content_type is not None:
            found[entry.name] = StaticFile(entry.name, entry.read_bytes(), content_type)
    if INDEX not in found:
        raise FileNotFoundError(f"the web page's {INDEX} is missing from the aictl package")
    return found
