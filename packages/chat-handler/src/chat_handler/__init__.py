"""Text chat answered with retrieval and an LLM, as a Ray Serve application.

``chat_handler:app`` is the application (route prefix ``/chat``) and
``chat_handler:build_app`` its builder; both load Ray Serve on first use only.
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "app", "build_app"]


def __getattr__(name: str) -> Any:
    if name in ("app", "build_app"):
        from chat_handler import deployment

        return deployment.build_app() if name == "app" else deployment.build_app
    raise AttributeError(f"module 'chat_handler' has no attribute {name!r}")
