"""The web page deployment: ``GET /`` answers the page, ``GET /static/NAME`` its files.

The page talks to ``POST /chat`` and ``POST /voice/stream`` on the same Serve proxy:
deployed at route prefix ``/``, this app gets only what no longer prefix (``/chat``,
``/voice``, ``/llm``...) claims.
"""

# No `from __future__ import annotations`: through `serve.ingress`, FastAPI must see the
# routes' parameter types themselves, not their names.

from typing import Any

from fastapi import FastAPI, Response
from pydantic import Field
from ray import serve
from ray.serve import Application

from aictl.web.assets import CONTENT_SECURITY_POLICY, INDEX, StaticFile, load_static_files
from handler_base.deployment import WEB_BODY_BYTES, HandlerArgs, bind_deployment
from handler_base.errors import NotFoundError
from handler_base.http import configure_guard, platform_app

api: FastAPI = platform_app(
    "Web page",
    "Chat and push-to-talk voice in the browser.",
    max_body_bytes=WEB_BODY_BYTES,
    # The page and its files are open; the page asks for the key the APIs need.
    public_paths=("/", "/static/*"),
)


def _file_response(file: StaticFile, head: bool = False) -> Response:
    return Response(
        b"" if head else file.body,
        media_type=file.content_type,
        headers={
            "Content-Length": str(len(file.body)),
            # The files change with the installed package: always revalidate.
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "Referrer-Policy": "no-referrer",
        },
    )


class WebArgs(HandlerArgs):
    """Builder arguments of the web application (the Serve config's ``args``)."""

    num_cpus: float = Field(default=0.05, gt=0.0)
    max_ongoing_requests: int = Field(default=64, ge=1)


@serve.deployment(name="WebPage")
@serve.ingress(api)
class WebPage:
    """Serves the page and its static files from memory."""

    def __init__(self, args: WebArgs) -> None:
        """Read the static files shipped in the package (``args``: the guard's limits)."""
        configure_guard(api, args.admission())
        self.files = load_static_files()

    def _file(self, name: str) -> StaticFile:
        found = self.files.get(name)
        if found is None:
            raise NotFoundError(f"the web page has no file named {name!r}")
        return found

    @api.get("/", response_model=None)
    async def index(self) -> Response:
        """``GET /``: the page."""
        return _file_response(self._file(INDEX))

    @api.head("/", response_model=None, include_in_schema=False)
    async def index_head(self) -> Response:
        """``HEAD /``: the page's headers."""
        return _file_response(self._file(INDEX), head=True)

    @api.get("/static/{name}", response_model=None)
    async def static(self, name: str) -> Response:
        """``GET /static/NAME``: one of the page's files, with its content type."""
        return _file_response(self._file(name))


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The web application (``import_path: aictl.web:build_app``, route ``/``, app ``web``).

    Args:
        args: :class:`WebArgs` fields.

    Returns:
        The bound deployment.
    """
    return bind_deployment(WebPage, WebArgs.model_validate(args or {}))
