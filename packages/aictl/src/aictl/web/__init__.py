"""The platform's web page (chat and push-to-talk voice) as a Ray Serve application.

``aictl.web:app`` is the application (route prefix ``/``, beside ``/chat`` and
``/voice`` on the same Serve proxy, so the page calls them same-origin) and
``aictl.web:build_app`` its builder; both load Ray Serve on first use only.
"""

from typing import Any

__all__ = ["APP_NAME", "ROUTE_PREFIX", "app", "build_app"]

APP_NAME = "web"
"""The Serve application name of the page."""
ROUTE_PREFIX = "/"
"""Where the page is served: Serve routes ``/chat`` and ``/voice`` to their own apps."""


def __getattr__(name: str) -> Any:
    if name in ("app", "build_app"):
        from aictl.web import deployment

        return deployment.build_app() if name == "app" else deployment.build_app
    raise AttributeError(f"module 'aictl.web' has no attribute {name!r}")
